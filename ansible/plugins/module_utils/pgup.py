# -*- coding: utf-8 -*-
# Apache-2.0
"""Runs pgup on the managed host with --json and turns its answer into a module result.

pgup prints one JSON document on stdout, also when it fails ({"error": ..., "kind": ...}),
and exits 0 (done), 1 (error), 2 (wrong command line), 3 (a check refused, nothing changed)
or 130 (interrupted). Whether anything changed is pgup's to say, never the module's guess.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

PGUP_ARG = dict(type="str", default="pgup")
TARGET_ARGS = dict(
    container=dict(type="str"),
    volume=dict(type="str"),
    data_dir=dict(type="path"),
)
TARGET_EXCLUSIVE = [("container", "volume", "data_dir")]
TARGET_REQUIRED = [("container", "volume", "data_dir")]


def target_args(params):
    """The --container/--volume/--data-dir arguments the task names."""
    for name in ("container", "volume", "data_dir"):
        if params.get(name):
            return ["--" + name.replace("_", "-"), str(params[name])]
    return []


def run(module, args):
    """Runs `pgup --json ARGS`; returns (rc, document, stderr)."""
    rc, out, err = module.run_command([module.params["pgup"], "--json"] + args)
    try:
        document = json.loads(out) if out.strip() else {}
    except ValueError:
        document = {}
    return rc, document, err


def fail(module, rc, document, err, **more):
    """Fails the task with pgup's one line and its kind of exit."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    msg = document.get("error") or (lines[-1][len("error: "):] if lines else None)
    module.fail_json(
        msg=msg or "pgup exited with status %d: %s" % (rc, err.strip()[-500:]),
        kind=document.get("kind", "error"),
        rc=rc,
        **more
    )


def run_or_fail(module, args, **more):
    """Runs pgup; fails the task unless it exits 0; returns its document."""
    rc, document, err = run(module, args)
    if rc != 0:
        fail(module, rc, document, err, **more)
    return document
