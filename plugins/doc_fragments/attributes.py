# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module of the collection shares: the Python it needs on the
managed node (tests/config.yml declares the same to ansible-test), and its
attributes: a module that changes something supports check mode and diff; an
_info module only reads."""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
requirements:
  - Python 3.11 or newer on the managed node (Debian 12's C(python3))
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
"""

    INFO_MODULE = r"""
options: {}
requirements:
  - Python 3.11 or newer on the managed node (Debian 12's C(python3))
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Reads only.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: N/A
    details: Changes nothing.
"""
