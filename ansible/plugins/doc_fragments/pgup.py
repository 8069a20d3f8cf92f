# -*- coding: utf-8 -*-
# Apache-2.0
"""The options every module of the collection shares."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  pgup:
    description: The pgup executable on the managed host.
    type: str
    default: pgup
"""
