"""Jupyter: a check result renders as the phase table and the CLI's SVG timeline."""

import xml.etree.ElementTree as ET

import vramplan


def test_a_check_result_renders_its_phases_and_the_timeline(seed):
    page = seed._repr_html_()
    assert "DOES NOT FIT" in page
    for phase in seed.phases:
        assert f"<td>{phase['name']}</td>" in page
    start = page.index("<svg")
    svg = ET.fromstring(page[start:])  # the timeline parses as XML on its own
    assert svg.tag.endswith("svg")
    assert seed.svg and page.endswith(seed.svg)


def test_suggest_and_diagnose_render_too():
    from conftest import SEED_CONFIG, SEED_LOG

    s = vramplan.suggest(SEED_CONFIG, gpu="rtx3060")
    assert s.best["label"] in s._repr_html_()
    d = vramplan.diagnose(SEED_LOG.read_text())
    assert "oversized_tensor" in d._repr_html_()
