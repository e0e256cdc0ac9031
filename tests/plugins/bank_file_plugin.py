"""A test plugin whose prompt bank is whatever file ``config["TEST_BANK_FILE"]`` names.

It lets the start-up tests hand create_app() a broken bank through the same
hook and loader a real plugin uses.
"""

from __future__ import annotations

from webapp import hookimpl
from webapp.interfaces import ClinicalApp
from webapp.prompt_bank import load_prompt_bank


@hookimpl
def register_clinical_apps(config):
    return [ClinicalApp("bank_file", "Bank from a file", bank="bank_file", classifier="medsiglip")]


@hookimpl
def register_prompt_banks(config):
    return [load_prompt_bank(config["TEST_BANK_FILE"])]
