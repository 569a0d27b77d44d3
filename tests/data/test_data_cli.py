from __future__ import annotations

import hashlib
import os
import shutil

import pytest
from click.testing import CliRunner

from nnrun.data_cli import data
from nnrun.runtime.data import fetch
from nnrun.runtime.data.locations import IDX_FILES

# The downloader (a core dependency) is imported by the download alone; a machine without it
# (the GPU machine's preinstalled set) skips these tests rather than failing their collection.
pooch = pytest.importorskip("pooch")
requests = pytest.importorskip("requests")


def run(*arguments: str):
    return CliRunner().invoke(data, list(arguments))


def table(output: str) -> dict[str, str]:
    return {line.split()[0]: line for line in output.splitlines()[2:]}  # after the header rule


def test_list_shows_every_dataset_with_shape_and_location(tmp_path, monkeypatch, make_mnist_like):
    make_mnist_like(tmp_path / "mnist")
    monkeypatch.setenv("NNRUN_DATA_DIR", str(tmp_path))
    result = run("list")
    assert result.exit_code == 0, result.output
    rows = table(result.output)
    assert result.output.split()[:2] == ["name", "sample"]
    assert set(rows) == {"digits", "mnist", "fashion_mnist", "mnist1d", "xor", "spirals", "blobs",
                         "shapes", "npz", "csv"}
    assert "[1, 28, 28]" in rows["mnist"] and str(tmp_path / "mnist") in rows["mnist"]
    assert rows["mnist"].endswith("present")
    assert str(tmp_path / "fashion_mnist") in rows["fashion_mnist"]
    assert "missing: nnrun data fetch fashion_mnist" in rows["fashion_mnist"]
    assert "[1, 40]" in rows["mnist1d"] and "[2]" in rows["xor"]


def test_fetch_of_a_dataset_built_in_or_generated_succeeds_with_nothing_to_download(
        monkeypatch):
    # A script may fetch whatever its spec names before training.
    for name, where in (("digits", "inside the nnrun package: ready"), ("xor", "generated")):
        result = run("fetch", name)
        assert result.exit_code == 0, result.output
        assert result.stdout == f"{name}: nothing to download ({where}" + (
            ")\n" if name == "digits" else ": ready)\n")
    monkeypatch.setattr("nnrun.data_cli.generator_needed", lambda name: "mnist1d")
    result = run("fetch", "mnist1d")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == ("error: mnist1d: nothing to download; generating it needs the "
                             "mnist1d package; install it with pip install 'nnrun[datasets]'\n")


def test_fetch_of_no_such_dataset_or_of_your_own_file_is_a_one_line_error():
    for name, start in (
            ("MNIST", "error: MNIST: no dataset of that name; did you mean mnist? (downloadable "
                      "datasets are mnist, fashion_mnist; nnrun data list shows every one)"),
            ("fashion-mnist", "error: fashion-mnist: no dataset of that name; did you mean "
                              "fashion_mnist?"),
            ("", "error: '': no dataset of that name (downloadable datasets are mnist"),
            ("npz", "error: npz: your own file, read from data.path: nothing to fetch")):
        result = run("fetch", name)
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr.startswith(start), result.stderr
        assert result.stderr.count("\n") == 1


def serve_files(root, seed: bytes = b"") -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    digests = {}
    for base in IDX_FILES.values():
        content = seed + base.encode() * 50
        (root / f"{base}.gz").write_bytes(content)
        digests[f"{base}.gz"] = (hashlib.sha256(content).hexdigest(),)
    return digests


def test_fetch_downloads_into_dest(mirror, tmp_path, monkeypatch):
    root, url = mirror
    monkeypatch.setitem(fetch.CHECKSUMS, "mnist", serve_files(root / "mnist"))
    monkeypatch.setitem(fetch.MIRRORS, "mnist", (f"{url}/mnist/",))
    destination = tmp_path / "out"
    result = run("fetch", "mnist", "--dest", str(destination))
    assert result.exit_code == 0, result.output
    assert f"mnist: files in {destination}" in result.stdout
    assert result.stdout.count("checksum ok") == 4
    assert len(os.listdir(destination)) == 4


def test_fetch_default_destination_follows_nnrun_data_dir(mirror, tmp_path, monkeypatch):
    root, url = mirror
    monkeypatch.setitem(fetch.CHECKSUMS, "fashion_mnist", serve_files(root / "f"))
    monkeypatch.setitem(fetch.MIRRORS, "fashion_mnist", (f"{url}/f/",))
    monkeypatch.setenv("NNRUN_DATA_DIR", str(tmp_path / "data"))
    result = run("fetch", "fashion_mnist")
    assert result.exit_code == 0, result.output
    assert len(os.listdir(tmp_path / "data" / "fashion_mnist")) == 4


def test_fetch_with_a_corrupted_mirror_fails_in_one_line(mirror, tmp_path, monkeypatch):
    root, url = mirror
    digests = serve_files(root / "mnist")
    serve_files(root / "mnist", seed=b"tampered")
    monkeypatch.setitem(fetch.CHECKSUMS, "mnist", digests)
    monkeypatch.setitem(fetch.MIRRORS, "mnist", (f"{url}/mnist/",))
    result = run("fetch", "mnist", "--dest", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: mnist: could not fetch train-images-idx3-ubyte.gz")
    assert "checksum mismatch" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()  # the fetch created it, and removes it


def test_fetch_says_a_copy_there_fails_its_checksum(mirror, tmp_path, monkeypatch):
    """The design audit: a damaged file in --dest was passed over without a word, and the
    fetch that failed then named only the mirrors."""
    root, url = mirror
    monkeypatch.setitem(fetch.CHECKSUMS, "mnist", serve_files(root / "mnist"))
    monkeypatch.setitem(fetch.MIRRORS, "mnist", (f"{url}/mnist/",))
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    result = run("fetch", "mnist", "--dest", str(destination))
    assert result.exit_code == 0, result.output
    assert (f"t10k-labels-idx1-ubyte.gz in {destination} fails its checksum (damaged, cut short "
            "or another file): replaced, downloaded from") in result.stdout
    (destination / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    monkeypatch.setitem(fetch.MIRRORS, "mnist", ("http://127.0.0.1:9/mnist/",))  # refused
    result = run("fetch", "mnist", "--dest", str(destination))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: mnist: t10k-labels-idx1-ubyte.gz in {destination} "
                                    "fails its checksum (damaged, cut short or another file), "
                                    "and a fresh copy could not be fetched (")
    assert result.stderr.endswith(f"download it by hand into {destination} in its place\n")


NO_NETWORK = ("HTTPSConnectionPool(host='mirror.example', port=443): Max retries exceeded with "
              "url: /mnist/train-images-idx3-ubyte.gz (Caused by NameResolutionError(\"<urllib3."
              "connection.HTTPSConnection object at 0x7f>: Failed to resolve 'mirror.example' "
              "([Errno -3] Temporary failure in name resolution)\"))")


def test_fetch_without_a_network_says_so_briefly_and_removes_what_it_created(tmp_path,
                                                                             monkeypatch):
    """The whole urllib chain (900 characters) was printed, and NNRUN_DATA_DIR/mnist, made
    for the download, stayed behind."""
    def no_network(*args, **kwargs):
        raise requests.exceptions.ConnectionError(NO_NETWORK)

    monkeypatch.setattr(pooch, "retrieve", no_network)
    monkeypatch.setitem(fetch.MIRRORS, "mnist", ("https://a.example/", "https://b.example/"))
    monkeypatch.setenv("NNRUN_DATA_DIR", str(tmp_path / "missing" / "data"))
    result = run("fetch", "mnist")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "(2 mirrors: the host name does not resolve: no network?)" in result.stderr
    # brief: the line without the destination, whose length is the temporary directory's
    brief = result.stderr.replace(str(tmp_path), "")
    assert "urllib3" not in result.stderr and len(brief) < 200
    assert list(tmp_path.iterdir()) == []


def test_an_empty_dest_is_a_usage_error(tmp_path, monkeypatch):
    """`--dest ''` (an unset shell variable) downloaded into the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pooch, "retrieve", None)  # any download would fail loudly
    result = run("fetch", "mnist", "--dest", "")
    assert result.exit_code == 2 and "--dest" in result.stderr and "is empty" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_fetch_from_a_mirror_given_on_the_command_line_accepts_each_known_digest(
        mirror, shared_data, tmp_path):
    """The shared copy's files match the second accepted digests (re-compressed, the same
    bytes inside): served over HTTP with the default checksums, every file is accepted; a
    tampered one is refused and not kept."""
    root, url = mirror
    shutil.copytree(shared_data / "mnist", root / "mnist")
    destination = tmp_path / "out"
    result = run("fetch", "mnist", "--dest", str(destination), "--mirror", f"{url}/mnist/")
    assert result.exit_code == 0, result.output
    assert result.stdout.count(f"downloaded from {url}/mnist/") == 4
    assert sorted(os.listdir(destination)) == sorted(fetch.CHECKSUMS["mnist"])
    with open(root / "mnist" / "t10k-labels-idx1-ubyte.gz", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff")
    again = tmp_path / "again"
    result = run("fetch", "mnist", "--dest", str(again), "--mirror", f"{url}/mnist/")
    assert result.exit_code == 1 and "checksum mismatch" in result.stderr
    assert "t10k-labels-idx1-ubyte.gz" in result.stderr
    kept = os.listdir(again) if again.exists() else []
    assert "t10k-labels-idx1-ubyte.gz" not in kept and all(n.endswith(".gz") for n in kept)


def test_fetch_finds_the_shared_files_already_present(shared_data):
    result = run("fetch", "mnist", "--dest", str(shared_data / "mnist"))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("already present, checksum ok") == 4


@pytest.mark.parametrize("url", ["not a url", "file:///etc/", "mirror.example/mnist/",
                                 "http://[::1", "http://127.0.0.1:99999/", "http://a b/",
                                 "http://user@:80/"])
def test_a_mirror_that_is_no_url_is_named_as_such(url, tmp_path):
    """The hostile-input audit: pooch refuses such a URL with the error of a bad checksum,
    and the message said "checksum mismatch, file refused"."""
    result = run("fetch", "mnist", "--dest", str(tmp_path / "out"), "--mirror", url)
    assert result.exit_code == 1 and "is not an http(s) URL" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()
