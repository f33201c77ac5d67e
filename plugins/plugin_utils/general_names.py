# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Subject alternative names in community.crypto's TYPE:value form, as the
collection's filters read them."""
from __future__ import annotations

from ansible.errors import AnsibleFilterError

KINDS = {"dns": "DNS", "ip": "IP", "email": "email", "uri": "URI"}


def split(general_name: str) -> tuple[str, str]:
    """The name's type (DNS, IP, email or URI) and its value."""
    kind, sep, value = str(general_name).partition(":")
    if not sep or not value:
        raise AnsibleFilterError(f"'{general_name}' is not of the form TYPE:value")
    canonical = KINDS.get(kind.lower())
    if canonical is None:
        raise AnsibleFilterError(f"'{general_name}': type must be DNS, IP, email or URI")
    return canonical, value
