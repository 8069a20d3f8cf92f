#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster
short_description: Upgrade, roll back or clean up a PostgreSQL cluster in Docker with pgup
description:
  - Runs pgup on the managed host with C(--json) and reports what pgup did.
  - V(changed) is pgup's own answer; re-running a finished upgrade, rollback or cleanup reports
    no change.
  - In check mode nothing changes on the host; O(state=upgraded) runs C(pgup check), which
    asks the running server and pg_upgrade itself whether the upgrade can go through,
    O(state=cleaned) runs C(pgup cleanup --dry-run).
options:
  state:
    description: What the cluster should be.
    type: str
    choices: [upgraded, rolled_back, cleaned]
    default: upgraded
  container:
    description: The container whose volume or bind mount holds the data.
    type: str
  volume:
    description: A named volume holding the data.
    type: str
  data_dir:
    description: A host directory holding the data.
    type: path
  to:
    description: The PostgreSQL major to upgrade to (O(state=upgraded)).
    type: int
  new_image:
    description: Re-create the container on this image once the upgrade is verified.
    type: str
  old_image:
    description: The old major's server image, when the container does not run it.
    type: str
  image:
    description: An upgrade image holding both majors (else pgup assembles one).
    type: str
  mode:
    description: How the old cluster is kept (C(link) keeps none and needs O(no_backup)).
    type: str
    choices: [auto, copy, clone, link]
  no_backup:
    description: Keep no copy of the old cluster; no rollback is possible then.
    type: bool
    default: false
  transfer:
    description: pg_upgrade's transfer.
    type: str
    choices: [auto, link, swap]
  stop_others:
    description: Stop other containers running on the data first, and start them again after.
    type: bool
    default: false
  jobs:
    description: pg_upgrade's parallel jobs.
    type: int
  hooks:
    description:
      - A directory on the host of executables named after pgup's phases (C(pre-check),
        C(pre-backup), C(post-backup), C(pre-upgrade), C(post-upgrade), C(pre-rollback),
        C(post-rollback), C(end)), run by pgup at those points (O(state=upgraded) and
        O(state=rolled_back)).
      - A failing C(post-upgrade) hook (the site's smoke test) puts the old cluster back unless
        O(keep_on_hook_failure).
    type: path
  hook_timeout:
    description: How long a hook may run before it is killed and fails (C(30s), C(10m)).
    type: str
  keep_on_hook_failure:
    description: When the C(post-upgrade) hook fails, leave the new cluster serving.
    type: bool
    default: false
  keep:
    description: With O(state=cleaned), keep the newest N backups.
    type: int
  older_than:
    description: With O(state=cleaned), only remove backups older than this (C(7d), C(12h)).
    type: str
extends_documentation_fragment: [pgup.fleet.pgup]
"""

EXAMPLES = r"""
- name: Upgrade the db container to 17
  pgup.fleet.cluster:
    container: db
    to: 17
    new_image: postgres:17

- name: Put the old cluster back
  pgup.fleet.cluster:
    container: db
    state: rolled_back
"""

RETURN = r"""
from:
  description: The major before.
  type: int
  returned: when pgup reports it
to:
  description: The major after (or checked for).
  type: int
  returned: when pgup reports it
backup:
  description: Where the old cluster is kept.
  type: str
  returned: after an upgrade with a backup
downtime_s:
  description: From the stop to the new major serving, in seconds.
  type: float
  returned: after an upgrade
verified:
  description: What the verification proved between the old and the new cluster.
  type: dict
  returned: after an upgrade
hooks:
  description: The site's hooks pgup ran, each with its phase and seconds.
  type: list
  returned: after an upgrade with O(hooks)
report:
  description: pgup's whole JSON document.
  type: dict
  returned: always
state:
  description: The state asked for.
  type: str
  returned: success
check_mode:
  description: Whether this was a check (nothing changed).
  type: bool
  returned: success
target:
  description: The target as pgup was given it (C(--container db)).
  type: str
  returned: success
kind:
  description: On failure, pgup's kind of exit (C(error), C(usage), C(refused), C(interrupted)).
  type: str
  returned: failure
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pgup.fleet.plugins.module_utils import pgup


def flag(params, name):
    """`--name value` for a set option, nothing otherwise."""
    value = params.get(name)
    if value is None or value is False:
        return []
    option = "--" + name.replace("_", "-")
    return [option] if value is True else [option, str(value)]


def hook_flags(params):
    """--hooks and its timeout, when the task names a hook directory."""
    if not params["hooks"]:
        return []
    return flag(params, "hooks") + flag(params, "hook_timeout")


def upgraded(module, target):
    p = module.params
    if p["to"] is None:
        module.fail_json(msg="state=upgraded needs to: the PostgreSQL major to upgrade to")
    to = ["--to", str(p["to"])]
    if module.check_mode:
        status = pgup.run_or_fail(module, ["status"] + target)
        if status.get("pg_version") == str(p["to"]) and not status.get("interrupted"):
            return dict(changed=False, to=p["to"], report=status)
        args = ["check"] + target + to
        for name in ("new_image", "old_image", "image", "mode"):
            args += flag(p, name)
        rc, report, err = pgup.run(module, args)
        if rc == 3 and "items" in report:
            failed = [i.get("detail", "") for i in report["items"] if i.get("outcome") == "fail"]
            module.fail_json(msg="; ".join(failed) or "pgup check refused the upgrade",
                             kind="refused", rc=rc, report=report)
        if rc != 0:
            pgup.fail(module, rc, report, err)
        return dict(changed=True, report=report, **{k: report.get(k) for k in ("from", "to")})
    args = ["upgrade"] + target + to + ["--yes"]
    for name in ("new_image", "old_image", "image", "mode", "no_backup", "transfer",
                 "stop_others", "jobs", "keep_on_hook_failure"):
        args += flag(p, name)
    args += hook_flags(p)
    report = pgup.run_or_fail(module, args)
    result = dict(changed=bool(report.get("changed")), report=report)
    for key in ("from", "to", "backup", "downtime_s", "verified", "hooks"):
        if key in report:
            result[key] = report[key]
    return result


def rolled_back(module, target):
    if module.check_mode:
        # A rollback puts the newest backup back, or finishes an interrupted run.
        status = pgup.run_or_fail(module, ["status"] + target)
        return dict(changed=bool(status.get("backups") or status.get("interrupted")),
                    report=status)
    args = ["rollback"] + target + ["--yes"] + flag(module.params, "stop_others")
    args += hook_flags(module.params)
    report = pgup.run_or_fail(module, args)
    return dict(changed=bool(report.get("changed", True)), report=report)


def cleaned(module, target):
    args = ["cleanup"] + target + flag(module.params, "keep") + flag(module.params, "older_than")
    args += ["--dry-run"] if module.check_mode else ["--yes"]
    report = pgup.run_or_fail(module, args)
    return dict(changed=bool(report.get("removed")), report=report)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="upgraded",
                       choices=["upgraded", "rolled_back", "cleaned"]),
            to=dict(type="int"),
            new_image=dict(type="str"),
            old_image=dict(type="str"),
            image=dict(type="str"),
            mode=dict(type="str", choices=["auto", "copy", "clone", "link"]),
            no_backup=dict(type="bool", default=False),
            transfer=dict(type="str", choices=["auto", "link", "swap"]),
            stop_others=dict(type="bool", default=False),
            jobs=dict(type="int"),
            hooks=dict(type="path"),
            hook_timeout=dict(type="str"),
            keep_on_hook_failure=dict(type="bool", default=False),
            keep=dict(type="int"),
            older_than=dict(type="str"),
            pgup=pgup.PGUP_ARG,
            **pgup.TARGET_ARGS
        ),
        mutually_exclusive=pgup.TARGET_EXCLUSIVE,
        required_one_of=pgup.TARGET_REQUIRED,
        supports_check_mode=True,
    )
    target = pgup.target_args(module.params)
    state = module.params["state"]
    act = dict(upgraded=upgraded, rolled_back=rolled_back, cleaned=cleaned)[state]
    # Said back, so that a summary tells a check from the change and names the target.
    module.exit_json(state=state, check_mode=module.check_mode, target=" ".join(target),
                     **act(module, target))


if __name__ == "__main__":
    main()
