# -*- coding: utf-8 -*-
# Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: summary
type: aggregate
short_description: What pgup did on each host, at the end of the run, as text and JSON
description:
  - Collects the results of C(pgup.fleet.cluster) on every host, in the order the hosts
    finished, and at the end of the run prints a table and writes it as JSON.
  - It is written at the end of the run even when a failure stopped the play (no later play
    runs then, so a summary play could not).
options:
  path:
    description: Where the JSON summary is written.
    default: pgup-rollout-summary.json
    env:
      - name: PGUP_SUMMARY
    type: path
requirements:
  - enabled with C(callbacks_enabled = pgup.fleet.summary) (the rollout playbook's
    C(ansible.cfg) beside it does)
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pgup.fleet.summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self.rows = {}
        # The order the hosts' upgrades ended in (the batches'), for the summary's order.
        self.ended = []

    def _row(self, host):
        if host not in self.rows:
            self.rows[host] = dict(host=host, target=None, **{"from": None}, to=None,
                                   result="not reached", downtime_s=None, backup=None)
        return self.rows[host]

    def _record(self, result, failed):
        task = result._task
        r = result._result
        host = result._host.get_name()
        if not task.action.endswith("pgup.fleet.cluster") and task.action != "cluster":
            # Another step failed: staging or verifying the bundle, or the site's health
            # command (the reason a rollback follows). The rollout's own stop (a `fail` task)
            # says nothing new.
            if failed and not task.action.endswith("fail"):
                self._row(host)["result"] = "%s failed: %s" % (task.get_name(), r.get("msg"))
            return
        args = r.get("invocation", {}).get("module_args", {})
        state = r.get("state") or args.get("state") or "upgraded"
        check = r.get("check_mode", bool(getattr(task, "check_mode", False)))
        row = self._row(host)
        for key in ("from", "to", "downtime_s", "backup"):
            if r.get(key) is not None:
                row[key] = r[key]
        if r.get("target"):
            row["target"] = r["target"]
        if state == "upgraded" and not check:
            self._ended(result)
        if failed:
            what = "check" if check else {"upgraded": "upgrade", "rolled_back": "rollback",
                                          "cleaned": "cleanup"}[state]
            row["result"] = "%s failed (%s): %s" % (what, r.get("kind", "error"), r.get("msg"))
        elif check:
            row["result"] = "checked: would change" if r.get("changed") else "checked: nothing to do"
        elif state == "upgraded":
            row["result"] = "upgraded" if r.get("changed") else "unchanged: already upgraded"
        elif state == "rolled_back" and not r.get("changed"):
            row["result"] = "nothing to put back"
        elif state == "rolled_back":
            prior = row["result"]
            row["result"] = "rolled back" + (" after: " + prior if "failed" in prior else "")
        else:
            row["result"] = "cleaned" if r.get("changed") else "nothing to clean"

    def _ended(self, result):
        host = result._host.get_name()
        if host not in self.ended:
            self.ended.append(host)

    def v2_runner_on_ok(self, result):
        self._record(result, False)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, True)

    def v2_playbook_on_stats(self, stats):
        order = self.ended + [h for h in self.rows if h not in self.ended]
        rows = [self.rows[h] for h in order]
        path = self.get_option("path")
        with open(path + ".partial", "w") as f:
            json.dump(rows, f, indent=2)
            f.write("\n")
        os.replace(path + ".partial", path)
        self._display.banner("PGUP SUMMARY")
        for row in rows:
            self._display.display(
                "%-16s %-4s → %-4s %-8s %s" % (
                    row["host"], row["from"] or "", row["to"] or "",
                    "%.1f s" % row["downtime_s"] if row["downtime_s"] is not None else "",
                    row["result"]))
        self._display.display("written to %s" % path)
