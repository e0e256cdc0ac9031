"""A broken prompt bank stops create_app() with a message naming the file and the condition.

The bank reaches the app the way every bank does: a plugin's
``register_prompt_banks`` hook reads it with ``load_prompt_bank`` while
create_app() builds its registry (tests/plugins/bank_file_plugin.py).
"""

from __future__ import annotations

import pytest

from webapp import create_app
from webapp.prompt_bank import PromptBankError

GOOD_BANK = """
name = "bank_file"
title = "Bank from a file"
group_tags = ["normal", "abnormal"]

[rules]
high_risk_groups = ["abnormal"]

[template_sets.plain]
label = "Plain picture"
templates = ["A picture of {}.", "An image showing {}."]

[[conditions]]
id = "normal"
label = "Nothing abnormal"
groups = ["normal"]
descriptions = ["nothing in particular"]

[[conditions]]
id = "effusion"
label = "Pleural effusion"
groups = ["abnormal"]
descriptions = ["fluid around the lung"]
snomed_ct = "60046008"
icd10 = "J90"
alert_threshold = 0.4
"""


def start(tmp_path, text: str):
    bank_file = tmp_path / "broken_bank.toml"
    bank_file.write_text(text)
    return create_app(
        {
            "TESTING": True,
            "MODEL": "unused",
            "LOAD_MODELS_AT_START": False,
            "DEFAULT_PLUGINS": ("plugins.medsiglip", "tests.plugins.bank_file_plugin"),
            "PLUGIN_ALLOWLIST": (),
            "TEST_BANK_FILE": str(bank_file),
            "CLINICAL_APP": "bank_file",
        }
    )


def test_a_valid_bank_starts(tmp_path, app_factory):
    app = app_factory.adopt(start(tmp_path, GOOD_BANK))
    bank = app.extensions["privascan_registry"].banks["bank_file"]
    assert [c.id for c in bank.conditions] == ["normal", "effusion"]


@pytest.mark.parametrize(
    "old, new, expected",
    [
        pytest.param('label = "Pleural effusion"\n', "", "condition 2 (id 'effusion'): missing label", id="missing-label"),
        pytest.param('label = "Nothing abnormal"', 'label = "Pleural Effusion"',
                     "condition 'Pleural effusion': duplicate label 'Pleural effusion' (also used by condition 'Pleural Effusion')",
                     id="duplicate-label"),
        pytest.param('id = "normal"', 'id = "effusion"',
                     "condition 'Pleural effusion': duplicate id 'effusion' (also used by condition 'Nothing abnormal')",
                     id="duplicate-id"),
        pytest.param('descriptions = ["nothing in particular"]', 'descriptions = ["nothing in particular"]\nicd10 = "J90"',
                     "condition 'Pleural effusion': duplicate icd10 'J90' (also used by condition 'Nothing abnormal')",
                     id="duplicate-icd10"),
        pytest.param('descriptions = ["nothing in particular"]', 'descriptions = ["nothing in particular"]\nsnomed_ct = "60046008"',
                     "condition 'Pleural effusion': duplicate snomed_ct '60046008' (also used by condition 'Nothing abnormal')",
                     id="duplicate-snomed-ct"),
        pytest.param("alert_threshold = 0.4", "alert_threshold = 1.4",
                     "condition 'Pleural effusion': alert_threshold 1.4 is outside [0, 1]", id="threshold-above-1"),
        pytest.param("alert_threshold = 0.4", "alert_threshold = -0.2",
                     "condition 'Pleural effusion': alert_threshold -0.2 is outside [0, 1]", id="threshold-below-0"),
        pytest.param('id = "effusion"\nlabel = "Pleural effusion"\ngroups = ["abnormal"]',
                     'id = "effusion"\nlabel = "Pleural effusion"\ngroups = ["abnormall"]',
                     "condition 'Pleural effusion': unknown group tag(s) abnormall (the bank's group_tags: ",
                     id="unknown-group"),
        pytest.param('"A picture of {}."', '"A picture of a chest."',
                     "template set 'plain': template 'A picture of a chest.' must contain '{}' exactly once",
                     id="template-without-placeholder"),
    ],
)
def test_a_broken_bank_stops_start_up_naming_file_and_condition(tmp_path, old, new, expected):
    assert old in GOOD_BANK
    with pytest.raises(PromptBankError) as caught:
        start(tmp_path, GOOD_BANK.replace(old, new, 1))
    message = str(caught.value)
    assert message.startswith("broken_bank.toml: "), message
    assert expected in message, message
