"""Who sees which jobs: a pure decision from the viewer, their groups and the configured
rules, as es_query.Access (enforced in every Elasticsearch query); the host's NSS lookup of
a viewer's groups is the thin adapter at the end."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass

from query.es_query import Access


@dataclass(frozen=True)
class AccessRules:
    admin_users: frozenset[str]
    admin_groups: frozenset[str]
    coordinators: Mapping[str, tuple[str, ...]]  # user -> accounts


def access_for(viewer: str, groups: frozenset[str], rules: AccessRules) -> Access:
    """Administrators (named, or members of an administrators' group) see every job; anyone
    else the jobs they own as the scheduler knows it and those of the accounts they
    coordinate."""
    if viewer in rules.admin_users or groups & rules.admin_groups:
        return Access(all_jobs=True, user=viewer)
    return Access(user=viewer, accounts=tuple(rules.coordinators.get(viewer, ())))


def unix_groups(user: str) -> frozenset[str]:
    """The names of user's groups as the host's NSS knows them (primary and supplementary);
    none for a user NSS does not know."""
    try:
        primary = pwd.getpwnam(user).pw_gid
    except KeyError:
        return frozenset()
    names = set()
    for gid in os.getgrouplist(user, primary):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return frozenset(names)
