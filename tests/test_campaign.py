"""Campaign files: checked before any run starts, expanded, scheduled (needs, jobs, failures,
finished and busy runs), run for real through the command line, archived."""
import os
import textwrap

import numpy as np
import pytest

from hpc_es import campaign, cli, config, io

TINY = ["run.iterations=2", "run.eval_every=0", "run.checkpoint_every=0"]


def _file(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_campaign_expands_its_grid_and_names_every_problem_of_the_file(tmp_path):
    plan = campaign.load(_file(tmp_path, """
        name = "t"
        [[runs]]
        dir = "a/{method}_seed{seed}"
        preset = "sgd_small_local"
        set = ["run.seed={seed}", "run.method={method}"]
        grid = {seed = [0, 1], method = ["sgd", "proxy"]}
        [[runs]]
        dir = "b"
        preset = "sgd_small_local"
        set = ["net.theta_from={root}/a/sgd_seed0/results.h5"]
        needs = ["a/sgd_seed0"]
        """), root="R")
    assert [p.dir for p in plan.runs] == ["a/sgd_seed0", "a/proxy_seed0", "a/sgd_seed1", "a/proxy_seed1", "b"]
    assert plan.runs[-1].overrides == ("net.theta_from=R/a/sgd_seed0/results.h5",) and plan.root == "R"
    # --only: the runs a glob names, with the runs they need, in the file's order; a glob matching none is refused
    assert [p.dir for p in campaign.only(plan, ["b"]).runs] == ["a/sgd_seed0", "b"]
    assert [p.dir for p in campaign.only(plan, ["a/proxy_*", "a/*_seed1"]).runs] == [
        "a/proxy_seed0", "a/sgd_seed1", "a/proxy_seed1"]
    assert campaign.only(plan, []) is plan
    with pytest.raises(campaign.CampaignError, match="--only 'c\\*' matches no run directory"):
        campaign.only(plan, ["c*"])
    bad = {
        'name = "t"\n': "expected keys name, root, archive and \\[\\[runs\\]\\]",
        '[[runs]]\ndir = "a"\npreset = "sgd_small_local"\nsets = []\n': "runs entry 1: expected keys dir and preset",
        '[[runs]]\ndir = "a{seed}"\npreset = "sgd_small_local"\n': "runs entry 1: placeholder 'seed' is not in its grid",
        '[[runs]]\ndir = "a"\npreset = "sgd_small_local"\n[[runs]]\ndir = "a"\npreset = "sgd_small_local"\n':
            "run directory a is planned twice",
        '[[runs]]\ndir = "a"\npreset = "sgd_small_local"\nneeds = ["z"]\n': "a needs z, which the campaign does not plan",
        '[[runs]]\ndir = "a"\npreset = "sgd_small_local"\nset = ["run.iteratons=3"]\n': r"runs entry 1 \(a\): .*iteratons",
        '[[runs]]\ndir = "a"\npreset = "sdg_small_local"\n': r"runs entry 1 \(a\): .*sdg_small_local",
    }
    for text, match in bad.items():
        with pytest.raises(campaign.CampaignError, match=match):
            campaign.load(_file(tmp_path, text))


class _Fake:
    """A stand-in for a training process: writes the run's results (finished) when polled, or
    fails with ``code``."""

    def __init__(self, argv, log, code=0):
        self.out = argv[argv.index("--out") + 1]
        self.sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        self.code, self.returncode, self.log = code, None, log
        log.append(("start", os.path.basename(self.out)))

    def poll(self):
        if self.returncode is None:
            if not self.code:
                cfg = config.load("sgd_small_local", self.sets).to_dict()
                io.save_results(self.out, cfg, {"completed_iterations": cfg["run"]["iterations"]},
                                {"iteration": [1, 2]}, np.zeros(1, np.float32))
            self.returncode = self.code
            self.log.append(("end", os.path.basename(self.out)))
        return self.returncode

    def send_signal(self, sig):
        pass


def test_runs_start_after_what_they_need_and_a_failure_stops_its_dependents(tmp_path):
    path = _file(tmp_path, f"""
        [[runs]]
        dir = "{{x}}"
        preset = "sgd_small_local"
        set = {TINY!r}
        grid = {{x = ["a", "b", "bad"]}}
        [[runs]]
        dir = "c"
        preset = "sgd_small_local"
        set = {TINY!r}
        needs = ["a", "b"]
        [[runs]]
        dir = "d"
        preset = "sgd_small_local"
        set = {TINY!r}
        needs = ["bad"]
        """)
    plan = campaign.load(path, root=str(tmp_path / "runs"))
    log, said = [], []
    failed = campaign.run(plan, jobs=2, say=said.append,
                          launch=lambda argv: _Fake(argv, log, code=3 if "bad" in argv[argv.index("--out") + 1] else 0))
    assert failed == 2  # bad itself, and d, which needs it
    starts = [name for kind, name in log if kind == "start"]
    assert set(starts) == {"a", "b", "bad", "c"} and "d" not in starts
    assert log.index(("start", "c")) > max(log.index(("end", "a")), log.index(("end", "b")))
    assert "== d: not started (a run it needs failed)" in said and any("bad: failed (exit 3)" in s for s in said)
    # run again: the finished runs are skipped, the failed one is tried again
    log.clear()
    campaign.run(plan, jobs=2, say=said.append, launch=lambda argv: _Fake(argv, log))
    assert sorted(name for kind, name in log if kind == "start") == ["bad", "d"]
    assert [line.split(":")[1].strip() for line in campaign.status(plan)[:5]] == ["done (2 iterations)"] * 5


def test_a_campaign_runs_for_real_resumes_and_archives_without_theta(mnist_dir, tmp_path, capsys, monkeypatch):
    """Through the command line: two tiny SGD runs, the second from the first's theta; `status`
    after a raised iteration count says partial; `run` continues it; `archive` copies both
    without theta, once."""
    monkeypatch.setenv("HPC_ES_DATA", mnist_dir)
    body = f"""
        archive = "{tmp_path / 'kept'}"
        [[runs]]
        dir = "first"
        preset = "sgd_small_local"
        set = {TINY!r}
        [[runs]]
        dir = "second"
        preset = "sgd_small_local"
        set = {TINY + ['net.theta_from={root}/first/results.h5']!r}
        needs = ["first"]
        """
    path = _file(tmp_path, body)
    root = str(tmp_path / "runs")
    assert cli.main(["campaign", "run", path, "--root", root, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 done of 2 runs" in out, out
    longer = _file(tmp_path, body.replace("run.iterations=2", "run.iterations=3", 1))
    assert campaign.status(campaign.load(longer, root))[0] == "first: partial (2 of 3 iterations)"
    assert cli.main(["campaign", "run", longer, "--root", root]) == 0
    assert io.read_results(os.path.join(root, "first", io.RESULTS))["completed_iterations"] == 3
    assert cli.main(["campaign", "archive", longer, "--root", root]) == 0
    assert "2 runs archived" in capsys.readouterr().out
    assert cli.main(["campaign", "archive", longer, "--root", root]) == 0
    assert "0 runs archived" in capsys.readouterr().out
    with pytest.raises(io.RunDirError, match="archived copy without its theta"):
        io.load_theta(str(tmp_path / "kept" / "first" / io.RESULTS), 4)


def test_every_campaign_file_of_the_checkout_is_valid():
    """The shipped campaigns load whole (every preset and override checked), each run once."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "campaigns")
    files = sorted(f for f in os.listdir(here) if f.endswith(".toml"))
    assert {"local.toml", "dose.toml", "layers.toml", "paper.toml", "table1.toml", "sigma.toml", "limited.toml", "first_order.toml"} <= set(files)
    for name in files:
        plan = campaign.load(os.path.join(here, name))
        assert plan.runs and len({p.dir for p in plan.runs}) == len(plan.runs)


def test_finished_command_judges_a_run_as_its_overrides_ask(tmp_path):
    """`hpc-es finished DIR --set ...` (what a script asks before it starts a run): a 2-iteration run is finished
    for its own config, not for a raised run.iterations; no run there is not finished."""
    out = str(tmp_path / "a")
    cfg = config.load("sgd_small_local", TINY).to_dict()
    io.save_results(out, cfg, {"completed_iterations": 2}, {"iteration": [1, 2]}, np.zeros(1, np.float32))
    assert cli.main(["finished", out]) == 0
    assert cli.main(["finished", out, "--set", "run.iterations=3"]) == 1
    assert cli.main(["finished", out, str(tmp_path / "nowhere")]) == 1


def test_jobs_count_ranks_so_wide_runs_do_not_share_the_cores(tmp_path):
    """--jobs 2: two 2-rank runs one after the other, two 1-rank runs side by side; a run wider
    than --jobs runs alone rather than never."""
    path = _file(tmp_path, f"""
        [[runs]]
        dir = "wide{{i}}"
        preset = "sgd_small_local"
        set = {TINY!r}
        ranks = 2
        grid = {{i = [0, 1]}}
        [[runs]]
        dir = "narrow{{i}}"
        preset = "sgd_small_local"
        set = {TINY!r}
        grid = {{i = [0, 1]}}
        [[runs]]
        dir = "huge"
        preset = "sgd_small_local"
        set = {TINY!r}
        ranks = 4
        """)
    log = []
    assert campaign.run(campaign.load(path, root=str(tmp_path / "runs")), jobs=2, say=lambda _: None,
                        launch=lambda argv: _Fake(argv, log)) == 0
    assert log[:4] == [("start", "wide0"), ("end", "wide0"), ("start", "wide1"), ("end", "wide1")]
    assert log[4:6] == [("start", "narrow0"), ("start", "narrow1")] and ("start", "huge") in log
