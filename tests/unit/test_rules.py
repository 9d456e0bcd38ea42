"""The Prometheus rules: generated from dashboards/rules/config.yml (the
committed file is the generator's output), every threshold, duration and
selector from the config, every alert documented with a runbook section."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pyprobe import cli
from pyprobe.errors import PyprobeError
from pyprobe.views import rules

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "dashboards/rules/config.yml"
RULES = REPO / "dashboards/rules/pyprobe.rules.yml"
RUNBOOKS = REPO / "docs/runbooks.md"


def config(**changes):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg.update(changes)
    return cfg


def alerts(cfg):
    groups = rules.build(rules.load_config(yaml.safe_dump(cfg)))["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_committed_rules_are_the_generators_output():
    """python dashboards/build.py (or pyprobe rules) rewrites it: not stale."""
    assert RULES.read_text() == rules.render(rules.load_config(CONFIG.read_text()))


def test_every_alert_has_summary_description_and_a_runbook_section():
    anchors = {h.strip().lower() for h in re.findall(r"^## (\S+)$", RUNBOOKS.read_text(), re.M)}
    found = alerts(config())
    assert set(found) == {a.name for a in rules.ALERTS}
    for name, rule in found.items():
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        base, _, anchor = notes["runbook_url"].partition("#")
        assert base.endswith("docs/runbooks.md") and anchor in anchors, name


def test_thresholds_durations_and_selectors_come_from_the_config():
    cfg = config(selector='job="edge", env="prod"', aggregate_by=["region", "instance"])
    cfg["rate_window"] = "2m"
    cfg["alerts"]["PyprobePacketDrops"].update(threshold=7.5, severity="critical")
    cfg["alerts"]["PyprobePacketDrops"]["for"] = "3m"
    cfg["alerts"]["PyprobeAcceptQueueFull"]["threshold"] = 0.75
    found = alerts(cfg)
    drops = found["PyprobePacketDrops"]
    assert drops["expr"].endswith("> 7.5") and drops["for"] == "3m"
    assert drops["labels"] == {"severity": "critical"}
    assert "[2m]" in drops["expr"] and "7.5/s" in drops["annotations"]["description"]
    assert found["PyprobeAcceptQueueFull"]["expr"].endswith("> 0.75")
    assert "75%" in found["PyprobeAcceptQueueFull"]["annotations"]["description"]
    for name, rule in found.items():
        assert 'job="edge", env="prod"' in rule["expr"], name
        assert "by (region, instance" in rule["expr"], name


def test_no_number_in_an_expression_but_the_configs():
    """With every threshold set to 12345 and the window to 7m, the only
    numbers left in the expressions are those."""
    cfg = config(rate_window="7m")
    for settings in cfg["alerts"].values():
        if "threshold" in settings:
            settings["threshold"] = 12345
    for name, rule in alerts(cfg).items():
        numbers = set(re.findall(r"(?<![\w.])[0-9.]+[a-z]*", rule["expr"]))
        assert numbers <= {"12345", "7m", "0"}, (name, numbers)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"selectr": "x"}, "unknown key 'selectr'"),
        ({"rate_window": "5 minutes"}, "rate_window: a Prometheus duration"),
        ({"aggregate_by": []}, "aggregate_by: a list of label names"),
    ],
)
def test_config_errors_name_the_key(change, message):
    with pytest.raises(PyprobeError, match=re.escape(message)):
        rules.load_config(yaml.safe_dump(config(**change)), "fleet.yml")


def test_alert_config_errors_name_the_alert_and_key():
    cfg = config()
    cfg["alerts"]["PyprobeTcpRetransmits"]["threshold"] = "lots"
    with pytest.raises(PyprobeError, match=r"alerts\.PyprobeTcpRetransmits\.threshold: a number"):
        rules.load_config(yaml.safe_dump(cfg))
    del cfg["alerts"]["PyprobeTcpRetransmits"]
    with pytest.raises(PyprobeError, match=r"alerts\.PyprobeTcpRetransmits: missing"):
        rules.load_config(yaml.safe_dump(cfg))


def test_rules_command_with_a_config(tmp_path, capsys):
    cfg = config(selector='job="node"')
    path = tmp_path / "fleet.yml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as e:
        cli.main(["rules", "--config", str(path)])
        raise SystemExit(0)
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert 'pyprobe_drops_total{job="node"' in out and yaml.safe_load(out)["groups"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_rules_and_a_tuned_config(tmp_path):
    cfg = config(selector='job=~"pyprobe|edge"', aggregate_by=["cluster", "instance"])
    tuned = tmp_path / "tuned.rules.yml"
    tuned.write_text(rules.render(rules.load_config(yaml.safe_dump(cfg))))
    for path in (RULES, tuned):
        check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_alerts_fire_above_the_configs_threshold_per_target(tmp_path):
    """promtool test rules: drops at 3/s fire with threshold 2 and not with
    threshold 4, one alert per cluster and instance, its annotations filled."""
    series = (
        'pyprobe_drops_total{job="pyprobe",cluster="eu",instance="a:9977",'
        'reason="NO_SOCKET",device="%s"}'
    )

    def fires(threshold):
        cfg = config()
        cfg["alerts"]["PyprobePacketDrops"].update(threshold=threshold)
        cfg["alerts"]["PyprobePacketDrops"]["for"] = "1m"
        (tmp_path / "rules.yml").write_text(rules.render(rules.load_config(yaml.safe_dump(cfg))))
        expected = [
            {
                "exp_labels": {
                    "severity": "warning",
                    "cluster": "eu",
                    "job": "pyprobe",
                    "instance": "a:9977",
                    "reason": "NO_SOCKET",
                },
                "exp_annotations": {
                    "summary": "a:9977 drops 3 packets/s: NO_SOCKET",
                    "description": "Packets freed by the kernel as dropped for reason NO_SOCKET "
                    f"at 3/s over 5m (alert above {threshold}/s; reasons configured as benign "
                    "are left out).",
                    "runbook_url": cfg["runbook_base"] + "#pyprobepacketdrops",
                },
            }
        ]
        test = {
            "rule_files": ["rules.yml"],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    # two devices of one target: 90 + 90 packets a minute = 3/s, one alert
                    "input_series": [
                        {"series": series % "eth0", "values": "0+90x20"},
                        {"series": series % "eth1", "values": "0+90x20"},
                    ],
                    "alert_rule_test": [
                        {
                            "eval_time": "15m",
                            "alertname": "PyprobePacketDrops",
                            "exp_alerts": expected if threshold < 3 else [],
                        }
                    ],
                }
            ],
        }
        (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
        run = subprocess.run(
            ["promtool", "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout + run.stderr

    fires(2)
    fires(4)
