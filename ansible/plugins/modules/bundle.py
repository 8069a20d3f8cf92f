#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: bundle
short_description: Load a signed image bundle on the managed host with pgup, unless its images are there
description:
  - Reads the bundle's manifest; when every image it holds is already in the host's engine
    under the same id, it only verifies the bundle (C(pgup image verify)): a bundle that does
    not verify fails the task even then.
  - Otherwise runs C(pgup image load --public-key), which verifies the bundle's checksum and
    minisign signature before the engine sees a byte, and loads nothing from a bundle that
    does not verify.
  - Loading an image changes no data and no container, so it runs in check mode too (and is
    reported).
options:
  path:
    description: The bundle on the managed host (C(.tar) or C(.tar.gz)), with its C(.sha256)
      and C(.minisig) beside it.
    type: path
    required: true
  public_key:
    description: The minisign public key on the managed host (a file, or the key itself).
    type: str
    required: true
extends_documentation_fragment: [pgup.fleet.pgup]
"""

EXAMPLES = r"""
- name: Load the upgrade images
  pgup.fleet.bundle:
    path: /var/lib/pgup/bundles/upgrade-17.tar
    public_key: /etc/pgup/vendor.pub
"""

RETURN = r"""
images:
  description: The images the bundle holds.
  type: list
  elements: str
  returned: always
loaded:
  description: Whether the bundle was loaded (false when its images were all here).
  type: bool
  returned: always
report:
  description: pgup's JSON document of the load, or of the verification.
  type: dict
  returned: success
"""

import json
import tarfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pgup.fleet.plugins.module_utils import pgup


def manifest(path):
    """[(name, image id)] of a `docker save` archive: each tag, or the id of an untagged image."""
    with tarfile.open(path) as tar:
        entries = json.load(tar.extractfile("manifest.json"))
    out = []
    for entry in entries:
        digest = entry["Config"].rsplit("/", 1)[-1].replace(".json", "")
        image_id = "sha256:" + digest
        out += [(name, image_id) for name in entry.get("RepoTags") or [image_id]]
    return out


def present(module, images):
    """Whether each name is the image the bundle holds, in the host's engine (one call)."""
    docker = module.get_bin_path("docker")
    if docker is None:
        return False
    names = [name for name, _ in images]
    rc, out, _ = module.run_command([docker, "image", "inspect", "--format", "{{.Id}}"] + names)
    return rc == 0 and out.split() == [image_id for _, image_id in images]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            public_key=dict(type="str", required=True, no_log=False),
            pgup=pgup.PGUP_ARG,
        ),
        supports_check_mode=True,
    )
    path = module.params["path"]
    try:
        images = manifest(path)
    except (OSError, KeyError, ValueError, tarfile.TarError) as e:
        module.fail_json(msg="%s is not an image bundle (`pgup image save` makes one): %s" % (path, e),
                         kind="error")
    names = [name for name, _ in images]
    key = ["--public-key", module.params["public_key"]]
    if present(module, images):
        report = pgup.run_or_fail(module, ["image", "verify", path] + key, images=names)
        module.exit_json(changed=False, loaded=False, images=names, report=report)
    report = pgup.run_or_fail(module, ["image", "load", path] + key, images=names)
    module.exit_json(changed=True, loaded=True, images=names, report=report)


if __name__ == "__main__":
    main()
