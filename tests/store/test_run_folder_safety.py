"""Nothing outside the run is touched (issue 19, item 3): the lock never follows a link, shard
cleanup deletes only the run's own shards, one --activation_save_dir per run, every run file is
read as a regular, size-capped file, and loaded records keep no mapping of their file."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import hostile
from activation_eval.analysis import cli as analysis_cli
from activation_eval.store import run_folder, shard_writer
from activation_eval.store.atomic import remove_stale_temp_files
from activation_eval.store.errors import CorruptFileError, RunFolderError
from activation_eval.store.files import open_regular, read_regular_bytes
from activation_eval.store.lock import RunLock
from activation_eval.store.records import save_activations
from activation_eval.store.run_files import append_results, merge_results, remove_unreferenced_shards, repair_results
from activation_eval.store.run_reader import load_activations
from activation_eval.store.run_writer import RunWriter
from activation_eval.store.save_dir import OWNER_FILE, SAVE_LOCK_FILE, lock_save_dir
from helpers import REPO_ROOT, read_rows, run_main

ROOT = REPO_ROOT
QUESTIONS = [("geo 1", "What is the capital of France?", "Paris"), ("geo 2", "What is the capital of Japan?", "Tokyo"),
             ("math 1", "What is two plus two?", "4"), ("math 2", "What is 10 plus 32?", "42")]


def write_bench(path, questions=QUESTIONS):
    path.write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in questions))
    return path


def args(model, bench, out, *extra, capture=True):
    return ["--model", model, "--benchmark", bench, "--limit", len(QUESTIONS), "--batch_size", 2,
            "--max_new_tokens", 3, "--output_dir", out,
            *(["--capture_activations", "--layers", "embeddings,0"] if capture else []), *extra]


def last_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


def digest_tree(folder):
    """{relative path: sha256} of every regular file under `folder` (links followed at the top only)."""
    out = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture
def no_hang():
    """Turns a blocked call (an open of a FIFO, a read of /dev/zero) into a failure after 60 s."""
    def fail(*_):
        raise TimeoutError("blocked for 60 s")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_bench(tmp_path_factory.mktemp("bench") / "b.jsonl")


@pytest.fixture(scope="module")
def done_run(tiny_dir, bench, tmp_path_factory):
    """A finished run with per-question record files (copy it before changing it)."""
    out = tmp_path_factory.mktemp("done") / "run"
    assert run_main(*args(tiny_dir, bench, out)) == 0
    return out


def copy_run(run, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(run, dest, symlinks=True)
    return dest


# ----------------------------------------------------------------------------- the lock

def test_a_symlinked_lock_is_refused_and_its_target_is_not_truncated(tiny_dir, bench, tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(target, out / run_folder.LOCK_FILE)      # the folder holds only the lock: "empty" before
    for extra in ((), ("--resume",)):
        assert run_main(*args(tiny_dir, bench, out, *extra)) == 2
        err = last_error(capsys)
        assert "is not a regular file (a symbolic link)" in err and "nothing was written through it" in err, err
        assert target.read_text() == "keep me"
    assert sorted(os.listdir(out)) == [run_folder.LOCK_FILE] and os.path.islink(out / run_folder.LOCK_FILE)


@pytest.mark.parametrize("kind", ["fifo", "folder", "dangling link"])
def test_a_lock_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, kind, no_hang):
    lock = tmp_path / run_folder.LOCK_FILE
    {"fifo": os.mkfifo, "folder": os.mkdir, "dangling link": lambda p: os.symlink(tmp_path / "nowhere", p)}[kind](lock)
    with pytest.raises(RunFolderError, match="is not a regular file"):
        RunLock(tmp_path).acquire()
    assert not (tmp_path / "nowhere").exists()           # a dangling link is not followed to create its target


def test_a_folder_holding_only_a_symlinked_lock_is_not_empty(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(tmp_path / "elsewhere", out / run_folder.LOCK_FILE)
    with pytest.raises(RunFolderError, match="is not a regular file"):       # refused, the link never followed
        RunWriter(out, "main").claim()
    os.unlink(out / run_folder.LOCK_FILE)
    (out / run_folder.LOCK_FILE).write_text("123\n")        # a killed run's plain lock file: still empty
    RunWriter(out, "main").claim().release()


# ----------------------------------------------------------------------------- shard cleanup

def _shard(folder, name, ids):
    return shard_writer.write_shard(folder / "units" / name, ids, [hostile.record(seed=i) for i in range(len(ids))])


def test_cleanup_through_a_shared_scratch_link_deletes_nothing_of_another_run(tmp_path):
    """activations/ of two runs linked to one scratch folder: B's cleanup keeps A's shards and
    every other *.safetensors there (before the fix it deleted all of them and exited 0)."""
    scratch = tmp_path / "scratch"
    a_shard = _shard(scratch, "aaaaaaaaaaaa.safetensors", ["q1", "q2"])        # run A's, named by A's rows
    a_left = _shard(scratch, "cccccccccccc.safetensors", ["q1"])              # A's crash leftover (A's to remove)
    other = _shard(scratch, "notes.safetensors", ["x"])                       # another tool's file
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    for run in (run_a, run_b):
        run.mkdir()
        os.symlink(scratch, run / "activations")
    (scratch / OWNER_FILE).write_text(os.path.realpath(run_a) + "\n")
    before = digest_tree(scratch)
    rows_b = [{"id": "q1", "activation_shard": "activations/units/bbbbbbbbbbbb.safetensors", "activation_row": 0}]
    assert remove_unreferenced_shards(run_b, run_b / "activations", rows_b) == 0
    assert digest_tree(scratch) == before
    # run A owns the folder: its own unreferenced shard goes, nothing else
    rows_a = [{"id": "q1", "activation_shard": "activations/units/aaaaaaaaaaaa.safetensors", "activation_row": 0},
              {"id": "q2", "activation_shard": "activations/units/aaaaaaaaaaaa.safetensors", "activation_row": 1}]
    assert remove_unreferenced_shards(run_a, run_a / "activations", rows_a) == 1
    assert not os.path.exists(a_left) and os.path.isfile(a_shard) and os.path.isfile(other)


def test_cleanup_keeps_links_foreign_names_and_other_questions_shards(tmp_path):
    run = tmp_path / "run"
    outside = _shard(tmp_path / "outside", "dddddddddddd.safetensors", ["q1"])
    (run / "activations" / "units").mkdir(parents=True)
    os.symlink(outside, run / "activations" / "units" / "dddddddddddd.safetensors")   # a link out of the run
    foreign = _shard(run / "activations", "eeeeeeeeeeee.safetensors", ["z9"])        # not this run's questions
    odd = _shard(run / "activations", "my-export.safetensors", ["q1"])               # not a unit-key name
    junk = run / "activations" / "units" / "ffffffffffff.safetensors"
    junk.write_bytes(b"not a shard")                                                 # unreadable: left alone
    mine = _shard(run / "activations", "0123456789abcdef.safetensors", ["q1"])      # this run's leftover
    rows = [{"id": "q1", "activation_shard": "activations/units/aaaaaaaaaaaa.safetensors", "activation_row": 0}]
    assert remove_unreferenced_shards(run, run / "activations", rows) == 1
    assert not os.path.exists(mine)
    for kept in (foreign, odd, junk, outside):
        assert os.path.isfile(kept), kept
    assert os.path.islink(run / "activations" / "units" / "dddddddddddd.safetensors")


def test_a_units_folder_that_is_a_link_is_not_cleaned(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    left = _shard(elsewhere, "aaaaaaaaaaaa.safetensors", ["q1"])
    (run / "activations").mkdir(parents=True)
    os.symlink(elsewhere / "units", run / "activations" / "units")
    assert remove_unreferenced_shards(run, run / "activations", [{"id": "q1"}]) == 0
    assert os.path.isfile(left)


def test_stale_temp_removal_leaves_links_and_other_names(tmp_path):
    folder, outside = tmp_path / "acts", tmp_path / "outside.bin"
    folder.mkdir()
    outside.write_text("keep")
    os.symlink(outside, folder / ".q1.pkl.0123abcd.tmp")          # a temp name, but a link
    (folder / ".q2.pkl.0123abcd.tmp").write_text("torn")          # what atomic_write leaves
    (folder / "q3.tmp").write_text("someone else's")
    assert remove_stale_temp_files(folder) == 1
    assert sorted(os.listdir(folder)) == [".q1.pkl.0123abcd.tmp", "q3.tmp"] and outside.read_text() == "keep"


def test_a_second_shard_run_on_a_shared_scratch_is_refused_and_the_first_keeps_everything(tiny_dir, bench, tmp_path,
                                                                                           capsys):
    scratch = tmp_path / "scratch"
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    assert run_main(*args(tiny_dir, bench, run_a, "--activation_store", "shards", "--activation_save_dir",
                          scratch)) == 0
    other = _shard(scratch, "eeeeeeeeeeee.safetensors", ["geo 1"])         # e.g. a copy someone put there
    before = digest_tree(scratch)
    run_b.mkdir()
    os.symlink(scratch, run_b / "activations")
    assert run_main(*args(tiny_dir, bench, run_b, "--activation_store", "shards", "--resume")) == 2
    assert f"belongs to run {os.path.realpath(run_a)}" in last_error(capsys)
    assert digest_tree(scratch) == before and os.path.isfile(other)
    assert load_activations(run_a, "geo 1")["activations"]["layer_0"].shape[-1] > 0


# ----------------------------------------------------------------------------- one run per save dir

def test_two_runs_with_one_save_dir_the_second_is_refused(tiny_dir, bench, tmp_path, capsys):
    save, run_a, run_b = tmp_path / "scratch" / "acts", tmp_path / "a", tmp_path / "b"
    assert run_main(*args(tiny_dir, bench, run_a, "--activation_save_dir", save)) == 0
    assert os.path.islink(run_a / "activations") and os.path.realpath(run_a / "activations") == os.path.realpath(save)
    assert (save / OWNER_FILE).read_text() == os.path.realpath(run_a) + "\n"
    assert not (save / SAVE_LOCK_FILE).exists()                            # released at the end
    rows = read_rows(run_a)
    assert all(r["activation_file"].startswith("activations/") for r in rows)
    before = digest_tree(save)
    b_bench = write_bench(tmp_path / "other.jsonl", [(i, q + " Really?", a) for i, q, a in QUESTIONS])
    assert run_main(*args(tiny_dir, b_bench, run_b, "--activation_save_dir", save)) == 2
    err = last_error(capsys)
    assert f"belongs to run {os.path.realpath(run_a)}" in err and "choose another --activation_save_dir" in err, err
    assert digest_tree(save) == before
    for row in rows:                                                        # A's rows load A's own records
        rec = load_activations(run_a / row["activation_file"])
        assert rec["prompt"] == row["prompt"] and rec["response"] == row["response"]
    assert run_main(*args(tiny_dir, bench, run_a, "--activation_save_dir", save, "--resume")) == 0   # itself: fine
    assert digest_tree(save) == before


def test_a_save_dir_lock_message(tiny_dir, bench, tmp_path, capsys):
    save = tmp_path / "scratch"
    held = lock_save_dir(str(tmp_path / "a"), str(save))
    try:
        assert run_main(*args(tiny_dir, bench, tmp_path / "b", "--activation_save_dir", save)) == 2
        err = last_error(capsys)
        assert f"--activation_save_dir {save} is in use by another run (pid {os.getpid()})" in err, err
    finally:
        held.release()
    assert not (tmp_path / "b").exists()


def test_an_activations_folder_that_is_not_the_link_is_refused(tiny_dir, bench, tmp_path, capsys):
    out, save = tmp_path / "run", tmp_path / "scratch"
    (out / "activations").mkdir(parents=True)
    (out / "activations" / "mine.pkl").write_bytes(b"x")
    assert run_main(*args(tiny_dir, bench, out, "--activation_save_dir", save, "--resume")) == 2
    assert "activations already exists and is not --activation_save_dir" in last_error(capsys)
    assert os.listdir(out / "activations") == ["mine.pkl"]


def test_a_fresh_run_refuses_a_save_dir_holding_unowned_files(tiny_dir, bench, tmp_path, capsys):
    save = tmp_path / "scratch"
    save.mkdir()
    (save / "geo_1-0123.pkl").write_bytes(b"someone's")
    assert run_main(*args(tiny_dir, bench, tmp_path / "run", "--activation_save_dir", save)) == 2
    assert "already holds files but no run's" in last_error(capsys)
    assert os.listdir(save) == ["geo_1-0123.pkl"]


def test_the_output_folder_cannot_be_the_save_dir(tiny_dir, bench, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(*args(tiny_dir, bench, out, "--activation_save_dir", tmp_path)) == 2
    assert "is the output folder or holds it" in last_error(capsys)


def test_a_save_dir_inside_the_run_is_reached_through_activations(tiny_dir, bench, tmp_path):
    out = tmp_path / "run"
    assert run_main(*args(tiny_dir, bench, out, "--activation_save_dir", out / "acts")) == 0
    assert os.readlink(out / "activations") == "acts" and not (out / "acts" / OWNER_FILE).exists()
    for row in read_rows(out):
        assert row["activation_file"].startswith("activations/")
        assert load_activations(out, row["id"])["response"] == row["response"]


# ----------------------------------------------------------------------------- run files

def test_read_regular_bytes_refuses_what_is_not_a_small_regular_file(tmp_path, no_hang):
    fifo, big, link = tmp_path / "fifo", tmp_path / "big.json", tmp_path / "zero"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", link)
    with open(big, "wb") as f:
        f.truncate(17 * 2**20)                    # sparse: costs no disk
    for path, why in ((fifo, "a FIFO"), (link, "a device"), (tmp_path, "a folder")):
        with pytest.raises(CorruptFileError, match=f"cannot read the thing \\({why}: only regular files are read\\)"):
            read_regular_bytes(path, 100, what="the thing")
    with pytest.raises(CorruptFileError, match=rf"{17 * 2**20} bytes, more than the {16 * 2**20}-byte limit.*big\.json"):
        read_regular_bytes(big, 16 * 2**20, what="the thing")
    (tmp_path / "ok").write_bytes(b"12345")
    assert read_regular_bytes(tmp_path / "ok", 5) == b"12345"
    with pytest.raises(FileNotFoundError):
        read_regular_bytes(tmp_path / "missing", 5)
    f, size = open_regular(tmp_path / "ok")
    with f:
        assert size == 5 and f.read() == b"12345"


@pytest.mark.parametrize("kind", ["fifo", "dev/zero", "too big", "not an object"])
@pytest.mark.parametrize("name", [run_folder.CONFIG_FILE, run_folder.SUMMARY_FILE])
def test_run_config_and_summary_readers(tmp_path, kind, name, no_hang):
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev/zero":
        os.symlink("/dev/zero", path)
    elif kind == "too big":
        with open(path, "wb") as f:
            f.truncate(run_folder.MAX_JSON_FILE_BYTES + 1)
    else:
        path.write_text("[1, 2]")
    read = run_folder.read_run_config if name == run_folder.CONFIG_FILE else run_folder.read_summary
    with pytest.raises(CorruptFileError, match=rf"cannot read the run's \w+ \(.*\): .*{name}$"):
        read(tmp_path)


def _hostile(run, name, kind):
    path = run / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("/dev/zero", path)


@pytest.mark.parametrize("kind", ["fifo", "dev/zero"])
def test_resume_with_a_hostile_run_config_or_results_file_fails_at_once(tiny_dir, bench, done_run, tmp_path, kind,
                                                                           capsys, no_hang):
    for name in (run_folder.CONFIG_FILE, run_folder.RESULTS_FILE):
        run = copy_run(done_run, tmp_path / name)
        _hostile(run, name, kind)
        assert run_main(*args(tiny_dir, bench, run, "--resume")) == 2
        err = last_error(capsys)
        assert f"only regular files are read): {run / name}" in err, err
        assert (os.path.islink if kind != "fifo" else os.path.exists)(run / name)      # left as it was


@pytest.mark.parametrize("kind", ["fifo", "dev/zero"])
def test_report_and_lens_with_hostile_run_files_do_not_block(done_run, tmp_path, kind, capsys, no_hang):
    run = copy_run(done_run, tmp_path)
    for name in (run_folder.CONFIG_FILE, run_folder.SUMMARY_FILE):
        _hostile(run, name, kind)
    # the report goes on without the settings and summary (they are only shown)
    assert analysis_cli.main(["--report", str(run), "--output", str(tmp_path / "r.html"), "--no_progress"]) == 0
    # the lens needs the run's model from run_config.json: a one-line error naming it
    assert analysis_cli.main(["--logit_lens", str(run), "--output_dir", str(tmp_path / "lens")]) == 2
    err = last_error(capsys)
    assert f"only regular files are read): {run / run_folder.CONFIG_FILE}" in err and "logit lens" in err, err
    _hostile(run, run_folder.RESULTS_FILE, kind)
    assert analysis_cli.main(["--report", str(run), "--output", str(tmp_path / "r2.html"), "--no_progress"]) == 2
    assert f"only regular files are read): {run / run_folder.RESULTS_FILE}" in last_error(capsys)
    assert analysis_cli.main(["--logit_lens", str(run), "--output_dir", str(tmp_path / "lens")]) == 2
    assert f"only regular files are read): {run / run_folder.RESULTS_FILE}" in last_error(capsys)


# ----------------------------------------------------------------------------- no mapping of a record

_TOUCH = """
import os, sys, torch
from activation_eval.store.run_reader import load_activations
from activation_eval.store.shards import load_shard_record, read_shard_layer, iter_shard_records
path, kind = sys.argv[1], sys.argv[2]
if kind == "record":
    got = [load_activations(path)]
elif kind == "layers":
    got = [load_activations(path, layers=["layer_0"])]
else:
    got = [load_shard_record(path, 0), {"activations": {"l": read_shard_layer(path, "layer_0").tensor}},
           *(rec for _, rec in iter_shard_records(path))]
os.truncate(path, 0)                          # someone else truncates the file after the load
total = 0.0
for rec in got:
    for t in list(rec["activations"].values()) + [v for v in rec.values() if isinstance(v, torch.Tensor)]:
        total += float(t.double().sum())      # touches every byte
print("touched", len(got))
"""


@pytest.mark.parametrize("kind", ["record", "layers", "shard"])
def test_a_loaded_record_survives_its_file_being_truncated(tmp_path, kind):
    big = {"activations": {f"layer_{i}": torch.randn(64, 1024) for i in range(4)}}       # 1 MiB a layer
    if kind == "shard":
        rec = dict(hostile.record(n_prompt=33, n_generated=32),               # 64 positions
                   activations={"layer_0": torch.randn(64, 1024), "layer_1": torch.randn(64, 1024)})
        path = shard_writer.write_shard(tmp_path / "units" / "aaaaaaaaaaaa.safetensors", ["q1", "q2"], [rec, rec])
    else:
        path = save_activations(dict(hostile.record(), **big), tmp_path / "q.safetensors")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _TOUCH, str(path), kind], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0 and "touched" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
    assert os.path.getsize(path) == 0


def test_results_and_shards_that_are_symlinks_are_never_written_through(tmp_path):
    """results.jsonl or shards/ linking elsewhere: appending or merging never writes the target."""
    target = tmp_path / "victim.txt"
    target.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(target, run / "results.jsonl")
    with pytest.raises(OSError, match="symbolic link"):
        append_results(str(run / "results.jsonl"), [{"id": "a"}])
    repair_results(str(run / "results.jsonl"))     # drops the torn line: replaces the link itself
    assert target.read_text() == "keep me\n"
    target.write_text('{"id": "a"}')                            # a complete row without its newline
    os.remove(run / "results.jsonl")
    os.symlink(target, run / "results.jsonl")
    with pytest.raises(OSError, match="symbolic link"):
        repair_results(str(run / "results.jsonl"))
    assert target.read_text() == '{"id": "a"}'
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "results.rank0.jsonl").write_text('{"id": "b"}\n')
    os.remove(run / "results.jsonl")
    os.symlink(other, run / "shards")
    with pytest.raises(OSError, match="symbolic link"):
        part = RunWriter(run, "main", rank=0, world=2)
        part.add({"id": "c"})
        part.flush()
    with pytest.raises(OSError, match="symbolic link"):
        merge_results(str(run))
    assert (other / "results.rank0.jsonl").read_text() == '{"id": "b"}\n'
