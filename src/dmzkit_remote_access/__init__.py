"""Services of the dmzkit.remote_access collection.

Each service is a small typed asyncio program with one job, installed on its
target host by the role that runs it.
"""
