"""Bad input: a vramplan.ConfigError naming the key, never a Rust panic; the console script
as the CLI (one line on stderr, exit 2)."""

import pathlib
import subprocess
import sys

import pytest
import vramplan
from conftest import ROOT, SEED_CONFIG


def test_an_unknown_key_names_it_and_the_closest_one():
    with pytest.raises(vramplan.ConfigError) as e:
        vramplan.check(batchsize=8)
    assert e.value.key == "batchsize"
    assert "batch_size" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_a_bad_value_names_the_key():
    with pytest.raises(vramplan.ConfigError) as e:
        vramplan.check(SEED_CONFIG, n_layer="twelve")
    assert e.value.key == "n_layer"
    assert "expected an int" in str(e.value)


def test_an_unknown_gpu_names_the_option():
    with pytest.raises(vramplan.ConfigError) as e:
        vramplan.check(gpu="rtx9999")
    assert e.value.key == "gpu"


def test_a_config_json_without_a_required_field_names_it(tmp_path):
    with pytest.raises(vramplan.ConfigError) as e:
        vramplan.check({"model_type": "llama", "hidden_size": 64, "architectures": ["X"]})
    assert e.value.key == "num_hidden_layers"
    assert str(e.value).startswith("the config dict: ")


def test_an_optimizer_vramplan_does_not_model_names_optim():
    with pytest.raises(vramplan.ConfigError) as e:
        vramplan.check(training_args={"optim": "adafactor"})
    assert e.value.key == "optim"


def test_a_value_that_is_no_python_literal_names_the_key():
    with pytest.raises(vramplan.ConfigError) as e:
        vramplan.check(batch_size=object())
    assert e.value.key == "batch_size"


def run(*args):
    """The `vramplan` command pip installed next to this interpreter."""
    script = pathlib.Path(sys.executable).with_name("vramplan")
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=ROOT)


def test_the_console_script_prints_the_verdict_and_exits_1_when_it_does_not_fit():
    out = run("check", str(SEED_CONFIG), "--gpu", "rtx3060", "--quiet")
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith("vramplan: DOES NOT FIT on NVIDIA GeForce RTX 3060")


def test_the_console_script_reports_bad_input_in_one_line_with_exit_2():
    out = run("check", "--batchsize=8")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'batchsize'" in lines[0]
    assert "Traceback" not in out.stderr and "panicked" not in out.stderr
