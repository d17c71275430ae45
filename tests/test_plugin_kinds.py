"""Attack and protocol plug-ins in SLSEC_PLUGINS work as defense plug-ins do (flag, TOML key,
help, `slsec list`, an end-to-end run), and a broken plug-in file is one line naming it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

TOY_ATTACK = '''
"""A toy attack: guesses every probe as the mean aux image, shifted by a public offset."""
from slsec.attacks.base import ATTACKS, Attack, Guess
from slsec.params import Param


@ATTACKS.register("toy-mean")
class ToyMean(Attack):
    name = "toy-mean"
    kind = "inversion"
    roles = {"vanilla": "server", "toy-relay": "server"}
    methods = {"mean": frozenset({"aux_data"})}
    default_order = ("mean",)
    params = (Param("toy_shift", "float", None, "toy-mean: added to the mean image",
                    check=("non_negative",), unused="shifts --attack toy-mean's guess"),)

    def run(self, view):
        n = sum(len(m["x"]) for m in view.smashed)
        shift = float(self.params.get("toy_shift") or 0.0)
        img = (view.aux.inputs.float().mean(0, keepdim=True) + shift).clamp(0, 1)
        return Guess(images=img.repeat(n, *([1] * (img.dim() - 1))), info={"method": "mean"})
'''

TOY_PROTOCOL = '''
"""A toy protocol: vanilla SL under another name, with one declared parameter."""
from slsec.params import Param
from slsec.protocols.base import PROTOCOLS
from slsec.protocols.vanilla import Vanilla


@PROTOCOLS.register("toy-relay")
class ToyRelay(Vanilla):
    name = "toy-relay"
    params = (Param("toy_hops", "int", 1, "toy-relay: relays between client and server",
                    check=("at_least_one",),
                    outside="is a parameter of {owners}, not of protocol {protocol}"),)
'''

SCRIPT = '''
import contextlib, io, json, sys
from slsec.cli import main
from slsec.config import merged_config
from slsec.attacks.base import ATTACKS
from slsec.run.harness import declared_params
from slsec.run.setup import prepare  # noqa: F401  (loads the plug-ins)

def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()

o = ["--out", sys.argv[2]]
res = {}
res["help"] = run("evaluate", "--help")[1]
res["list"] = run("list")[1]
cfg = merged_config(sys.argv[1], {})
res["toml"] = [cfg.protocol, cfg.attack, cfg.toy_shift, cfg.toy_hops,
               declared_params(cfg, ATTACKS.get("toy-mean"))]
res["bad_shift"] = run("evaluate", "--attack", "toy-mean", "--toy-shift", "-1", *o)
res["bad_hops"] = run("train", "--protocol", "toy-relay", "--toy-hops", "0", *o)
res["unused"] = run("train", "--toy-shift", "0.5", *o)
res["outside"] = run("train", "--toy-hops", "2", *o)
res["role"] = run("evaluate", "--protocol", "ushaped", "--attack", "toy-mean", *o)
res["run"] = run("evaluate", "--protocol", "toy-relay", "--attack", "toy-mean",
                 "--toy-shift", "0.1", "--toy-hops", "2", "--max-train", "64", "--aux-size",
                 "64", "--probe-size", "4", *o, "--json")
print(json.dumps(res))
'''


def _option_line(help_text: str, flag: str) -> str:
    text = " ".join(help_text.split())
    return text[text.index(flag):].split(" --")[0]


def test_an_attack_and_a_protocol_plugin_run_end_to_end(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "toy_attack.py").write_text(textwrap.dedent(TOY_ATTACK))
    (tmp_path / "plugins" / "toy_protocol.py").write_text(textwrap.dedent(TOY_PROTOCOL))
    toml = tmp_path / "toy.toml"
    toml.write_text('protocol = "toy-relay"\nattack = "toy-mean"\ntoy_shift = 0.25\n'
                    'toy_hops = 3\n')
    env = {**os.environ, "SLSEC_PLUGINS": str(tmp_path / "plugins")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(toml), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    shift = _option_line(res["help"], "--toy-shift")
    assert "FLOAT" in shift and "toy-mean: added to the mean image" in shift
    assert "[default: 1]" in _option_line(res["help"], "--toy-hops")
    assert "toy-mean" in _option_line(res["help"], "--attack ")
    assert "toy-relay" in _option_line(res["help"], "--protocol ")
    assert "toy-mean" in res["list"] and "toy-relay" in res["list"]
    assert res["toml"] == ["toy-relay", "toy-mean", 0.25, 3, {"toy_shift": 0.25}]
    rc, _, err = res["bad_shift"]
    assert rc == 2 and err == "error: --toy-shift must be a finite number >= 0, got -1.0\n"
    rc, _, err = res["bad_hops"]
    assert rc == 2 and err == "error: --toy-hops must be >= 1, got 0\n"
    rc, _, err = res["unused"]
    assert rc == 2 and "--toy-shift shifts --attack toy-mean's guess; it does not apply" in err
    rc, _, err = res["outside"]
    assert rc == 2 and "--toy-hops is a parameter of toy-relay, not of protocol vanilla" in err
    rc, _, err = res["role"]
    assert rc == 2 and "attack 'toy-mean' does not apply to protocol 'ushaped'" in err
    rc, out, err = res["run"]
    assert rc == 0, err
    r = json.loads(out)
    assert r["config"]["protocol"] == "toy-relay" and r["config"]["toy_shift"] == 0.1
    assert r["metrics"]["attack_method"] == "mean" and r["metrics"]["attack_n"] == 4
    assert "prior_ssim_mean" in r["metrics"]   # the leakage stands beside the prior


BROKEN = {
    "missing": (None, "does not exist"),
    "syntax": ("x = (\n", "is not valid Python at line 1"),
    "binary": (bytes(range(256)), "is not UTF-8 text"),
    "nothing": ("x = 1\n", "registers nothing"),
    "no-attrs": ('from slsec.defenses.base import DEFENSES\n@DEFENSES.register("y")\n'
                 'class Y:\n    pass\n', "does not declare point, protocols"),
    "attack-attrs": ('from slsec.attacks.base import ATTACKS\n@ATTACKS.register("y")\n'
                     'class Y:\n    roles = {"vanilla": "server"}\n',
                     "does not declare methods, default_order"),
    "attack-shape": ('from slsec.attacks.base import ATTACKS\n@ATTACKS.register("y")\n'
                     'class Y:\n    roles = {"vanilla": "server"}\n    methods = {"m": 1}\n'
                     '    default_order = ("m",)\n', "must declare roles"),
    "clash": ('from slsec.defenses.base import DEFENSES\n@DEFENSES.register("dp")\nclass Y:\n'
              '    point = "cut"\n    protocols = frozenset({"vanilla"})\n',
              "defense 'dp' is already registered"),
    "param-clash": ('from slsec.defenses.base import DEFENSES\nfrom slsec.params import Param\n'
                    '@DEFENSES.register("z")\nclass Y:\n    point = "cut"\n'
                    '    protocols = frozenset({"vanilla"})\n'
                    '    params = (Param("lr", "float", 1.0),)\n',
                    "clashes with the core option --lr"),
    "param-differs": ('from slsec.defenses.base import DEFENSES\nfrom slsec.params import '
                      'Param\n@DEFENSES.register("z2")\nclass Y:\n    point = "cut"\n'
                      '    protocols = frozenset({"vanilla"})\n'
                      '    params = (Param("sigma", "int", 3),)\n',
                      "differs from the one defense 'dp' declares"),
    "special": ("/dev/null", "is not a regular file"),
    "empty-folder": ("<dir>", "holds no .py files"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_naming_the_file(case, tmp_path):
    from slsec import plugins
    from slsec.errors import UserError
    body, expected = BROKEN[case]
    path = tmp_path / f"{case}.py"
    if body == "/dev/null":
        path = "/dev/null"
    elif body == "<dir>":
        path.mkdir()
    elif isinstance(body, bytes):
        path.write_bytes(body)
    elif body is not None:
        path.write_text(body)
    old = os.environ.get(plugins.ENV)
    os.environ[plugins.ENV] = str(path)
    try:
        assert not any(d.path == str(path) for d in plugins.declarations())
        (problem,) = plugins.problems()
        assert str(path) in problem and expected in problem and "\n" not in problem
        with pytest.raises(UserError, match=expected):
            plugins.check()
        from slsec.config import make_config
        with pytest.raises(UserError, match=expected):
            make_config({})
    finally:
        if old is None:
            os.environ.pop(plugins.ENV)
        else:
            os.environ[plugins.ENV] = old


@pytest.mark.parametrize("first,what", [("import sys\nsys.exit(0)", "SystemExit: 0"),
                                        ("raise KeyboardInterrupt", "KeyboardInterrupt")])
def test_an_exception_or_exit_at_import_is_one_line(first, what, tmp_path):
    """Importing runs the user's code: an exception, sys.exit or an interrupt it raises there
    names the file (not a silent exit, not a Ctrl-C)."""
    bad = tmp_path / "boom.py"
    bad.write_text(first + '\nfrom slsec.defenses.base import DEFENSES\n'
                   '@DEFENSES.register("boom")\nclass B:\n    point = "cut"\n'
                   '    protocols = frozenset({"vanilla"})\n')
    env = {**os.environ, "SLSEC_PLUGINS": str(bad)}
    code = ("from slsec import plugins\nfrom slsec.errors import UserError\n"
            "try:\n    plugins.load_extra()\nexcept UserError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == f"SLSEC_PLUGINS: plug-in {bad} failed at import ({what})\n"


def test_slsec_list_names_a_broken_plugin(tmp_path):
    bad = tmp_path / "syn.py"
    bad.write_text("def (:\n")
    env = {**os.environ, "SLSEC_PLUGINS": str(bad), "COLUMNS": "300"}
    proc = subprocess.run([sys.executable, "-m", "slsec.cli", "list"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0
    assert f"broken plug-in (left out): SLSEC_PLUGINS: plug-in {bad} is not valid" in proc.stdout
    assert "dp" in proc.stdout   # the rest is listed as before
