"""`faceproc identify` refuses options it cannot honour, in one line, before any work."""

from faceproc.cli import main


def test_identities_into_the_output_folder_itself_is_refused(tmp_path, capsys):
    out, photos = tmp_path / "out", tmp_path / "photos"
    out.mkdir()
    photos.mkdir()
    code = main(["identify", "--input", str(photos), "--output", str(out), "--into", f"{out}/"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "is the output folder itself" in error and "\n" not in error
    assert not (out / "identities").exists() and not (out / "manifest.parquet").exists()
