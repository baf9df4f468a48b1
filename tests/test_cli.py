"""The `ttq` command end to end: train, pack, eval (checkpoint and packed file agree), size, help."""
import json

import pytest

from ttq_lib.cli import main


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    rc = main(["train", "--data", "synthetic:256", "--epochs", "1", "--batch-size", "64", "--lr", "0.05",
               "--schedule", "cosine", "--threads", "1", "--out", str(out)])
    assert rc == 0
    return out / "last.safetensors"


@pytest.mark.parametrize("scheme", ["base3", "2bit"])
def test_pack_then_eval_gives_identical_accuracy(trained, tmp_path, capsys, scheme):
    packed = tmp_path / f"m.{scheme}.safetensors"
    assert main(["pack", str(trained), "-o", str(packed), "--scheme", scheme]) == 0
    assert "smaller" in capsys.readouterr().out
    assert main(["eval", str(trained), "--data", "synthetic:256", "--json"]) == 0
    plain = last_json(capsys)
    assert main(["eval", str(packed), "--data", "synthetic:256", "--json"]) == 0
    packed_result = last_json(capsys)
    assert packed_result["accuracy"] == plain["accuracy"]
    assert packed.stat().st_size < trained.stat().st_size / 5


def test_packed_file_on_real_test_split(trained, tmp_path, capsys, cifar_tgz):
    packed = tmp_path / "m.safetensors"
    main(["pack", str(trained), "-o", str(packed)])
    capsys.readouterr()
    accs = []
    for path in (trained, packed):
        assert main(["eval", str(path), "--data", str(cifar_tgz), "--test-subset", "1000", "--json"]) == 0
        accs.append(last_json(capsys)["accuracy"])
    assert accs[0] == accs[1]


def test_size_table(trained, capsys):
    assert main(["size", str(trained), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "base3" in out and "layer1.0.conv1" in out


def test_eval_pretrained_wrong_path_is_clear(capsys):
    assert main(["eval", "no/such.th", "--data", "synthetic:64"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_pack_full_precision_is_refused(pretrained_dir, tmp_path, capsys):
    rc = main(["pack", str(pretrained_dir / "resnet20-12fca82f.th"), "-o", str(tmp_path / "x.safetensors")])
    assert rc == 2
    assert "full-precision" in capsys.readouterr().err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "82, 123, 150" in out and "--sparsity" in out and "--resume" in out


def test_a_reader_that_goes_away_is_not_an_error(trained):
    """`ttq size ... | head` : the reader closes the pipe before the command writes; it ends quietly with 0."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "ttq_lib.cli", "size", str(trained)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the child has written anything: its first write meets a closed pipe
    err = proc.stderr.read()
    assert proc.wait() == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_reporting_commands_start_without_torch(tmp_path):
    """`ttq table` and `ttq --help` build no torch-backed options (cli.build_parser), so they import no torch;
    `ttq train --help` and `ttq pack --help` still list every option with its choices."""
    import subprocess
    import sys

    probe = ("import sys; from ttq_lib.cli import main; rc = main(sys.argv[1:]); "
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    (tmp_path / "plan").mkdir()
    for argv in (["table", str(tmp_path / "plan")], ["table", "--update", str(tmp_path / "README.md")]):
        (tmp_path / "README.md").write_text("no blocks\n")
        out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True)
        assert out.stdout.strip().splitlines()[-1] == "NO-TORCH", (argv, out.stdout, out.stderr)
    top = subprocess.run([sys.executable, "-m", "ttq_lib.cli", "--help"], capture_output=True, text=True, check=True)
    assert "train" in top.stdout and "pack" in top.stdout and "table" in top.stdout
    for command, option in [("train", "--scale-init {one,mean}"), ("pack", "--scheme {2bit,base3}")]:
        out = subprocess.run([sys.executable, "-m", "ttq_lib.cli", command, "--help"], capture_output=True, text=True,
                             check=True)
        assert option in out.stdout, out.stdout
