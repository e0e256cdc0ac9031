"""Lesions, comparison, reports and exports through the real app (tiny random MedSigLIP)."""

from __future__ import annotations

import csv
import io
import re

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from tests.helpers import multipart, photo_bytes
from webapp.lesion_metrics import asymmetry_index


def analysed_session(app, browser, n=3):
    assert browser.upload(*[(photo_bytes(seed), f"p{seed}.jpg") for seed in range(n)]).status_code == 200
    ids = browser.photo_ids()
    browser.post("/analyze-all")
    assert app.extensions["privascan_worker"].join_idle(300)
    return ids


def resources(bundle, kind):
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_group_compare_report_and_export(app, browser):
    ids = analysed_session(app, browser)
    data = next(iter(app.extensions["privascan_store"]._sessions.values()))
    for pid in ids:
        embedding = data.photos[pid].result.scores.embedding
        assert embedding is not None and abs(float((embedding**2).sum()) - 1) < 1e-4
    html = browser.post(f"/photos/{ids[0]}/lesion", data={"lesion": "new", "name": "Left shoulder mole", "site": "shoulder"}).get_data(as_text=True)
    assert "Left shoulder mole" in html and "Started the lesion" in html
    lesion_id = next(iter(data.lesions))
    browser.post(f"/photos/{ids[1]}/lesion", data={"lesion": lesion_id})
    assert data.lesions[lesion_id].photo_ids == [ids[0], ids[1]]
    page = browser.get(f"/lesions/{lesion_id}", htmx=False)
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Change since the previous photo" in text and "Sizes are relative" in text
    report = browser.get(f"/report/lesions/{lesion_id}", htmx=False).get_data(as_text=True)
    assert "Lesion: Left shoulder mole" in report and "SNOMED CT 16982005" in report and "not a diagnosis" in report
    session_report = browser.get("/report/session", htmx=False)
    assert session_report.status_code == 200 and "Summary" in session_report.get_data(as_text=True)
    fhir = browser.get("/export/session.fhir.json?crop=1", htmx=False)
    assert fhir.status_code == 200 and fhir.mimetype == "application/fhir+json"
    bundle = fhir.get_json()
    Bundle.model_validate(bundle)
    reports = resources(bundle, "DiagnosticReport")
    assert len(reports) == 3
    for report in reports:
        DiagnosticReport.model_validate(report)
        assert report["status"] == "preliminary" and report["conclusion"] and report["conclusionCode"]
    observations = resources(bundle, "Observation")
    assert len(observations) == 3 * 4 or len(observations) >= 3
    for observation in observations:
        Observation.model_validate(observation)
        assert observation["valueQuantity"]["unit"] == "%" and observation["interpretation"]
    assert len(resources(bundle, "Device")) == 2 and len(resources(bundle, "Media")) == 3
    assert resources(bundle, "Provenance")[0]["agent"][0]["who"]["reference"].startswith("urn:uuid:")
    sites = [o["bodySite"]["coding"][0]["code"] for o in observations if "bodySite" in o]
    assert "16982005" in sites
    rows = list(csv.DictReader(io.StringIO(browser.get("/export/session.csv", htmx=False).get_data(as_text=True))))
    assert len(rows) == 3 and {r["lesion"] for r in rows} == {"Left shoulder mole", ""}
    body = browser.get("/export/session.json", htmx=False).get_json()
    assert body["lesions"][0]["body_site_snomed_ct"] == "16982005"
    browser.post(f"/photos/{ids[1]}/ungroup")
    assert data.lesions[lesion_id].photo_ids == [ids[0]]
    browser.post(f"/photos/{ids[0]}/delete")
    assert data.lesions == {}


def test_suggestion_by_similarity(app_factory):
    from tests.helpers import Browser

    app = app_factory(SAME_LESION_SIMILARITY=-1.0)  # every analysed pair qualifies: the best is offered
    browser = Browser(app.test_client())
    ids = analysed_session(app, browser, 2)
    card = browser.get(f"/photos/{ids[1]}/card").get_data(as_text=True)
    assert "Same lesion as" in card
    key = re.search(r'name="key" value="([^"]+)"', card).group(1)
    assert browser.post(f"/photos/{ids[1]}/lesion/suggestion", data={"key": key, "answer": "yes"}).status_code == 200
    data = next(iter(app.extensions["privascan_store"]._sessions.values()))
    assert [sorted(lesion.photo_ids) for lesion in data.lesions.values()] == [sorted(ids)]
    assert browser.post(f"/photos/{ids[1]}/lesion/suggestion", data={"key": key, "answer": "yes"}).status_code == 409


def test_bad_input_is_a_clear_4xx(app, browser, client):
    assert browser.get("/export/session.fhir.json", htmx=False).status_code == 409
    assert browser.get("/report/session", htmx=False).status_code == 409
    assert browser.upload((photo_bytes(5), "x.jpg")).status_code == 200
    pid = browser.photo_ids()[0]
    response = browser.get(f"/export/photos/{pid}.fhir.json", htmx=False)
    assert response.status_code == 409 and "not" in response.get_data(as_text=True).lower()
    response = browser.post(f"/photos/{pid}/lesion", data={"lesion": "new", "site": "elbow-of-mars"})
    assert response.status_code == 400 and "body site" in response.get_data(as_text=True)
    assert browser.post("/photos/not-mine/lesion", data={"lesion": "new"}).status_code == 404
    assert browser.post(f"/photos/{pid}/lesion", data={"lesion": "someone-elses"}).status_code == 404
    data = next(iter(app.extensions["privascan_store"]._sessions.values()))
    assert data.lesions == {}


def test_api_fhir(app, client):
    response = client.post("/api/analyze?fhir=1", **multipart([("image", (photo_bytes(3), "x.jpg"))]))
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = response.get_json()
    Bundle.model_validate(bundle)
    assert resources(bundle, "DiagnosticReport")[0]["status"] == "preliminary"


def test_asymmetry_index():
    import numpy as np

    yy, xx = np.mgrid[0:101, 0:101]
    ellipse = ((xx - 50) / 40) ** 2 + ((yy - 50) / 20) ** 2 <= 1
    assert asymmetry_index(ellipse) < 0.05
    lopsided = ellipse.copy()
    lopsided[5:45, 60:100] = True  # a lobe on one side only
    assert asymmetry_index(lopsided) > asymmetry_index(ellipse) + 0.1
