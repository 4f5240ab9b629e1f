"""The Kaggle layout: splits, the class vocabulary, audio folders and test truth, validated
with messages that name the file and line."""

import pytest

from fatlib.io.dataset import (
    Clip,
    ManifestError,
    available_splits,
    class_vocabulary,
    clips_digest,
    list_audio,
    read_split,
    read_truth,
    split_source,
    versions_digest,
)


@pytest.fixture
def root(tmp_path):
    (tmp_path / "train_curated.csv").write_text("fname,labels\na.wav,Bark\nb.wav,\"Bark,Meow\"\n")
    (tmp_path / "sample_submission.csv").write_text("fname,Meow,Bark\nt1.wav,0,0\n")
    (tmp_path / "test_truth.csv").write_text("fname,labels\nt1.wav,Meow\n")
    (tmp_path / "test").mkdir()
    for name in ("t1.wav", "t0.flac", "notes.txt"):
        (tmp_path / "test" / name).write_bytes(b"")
    return tmp_path


def test_splits_vocabulary_and_labels(root):
    assert available_splits(str(root)) == ["train_curated", "test"]
    classes = class_vocabulary(str(root))
    assert classes == ["Meow", "Bark"]  # sample_submission's column order, not sorted
    clips = read_split(str(root), "train_curated", classes)
    assert [(c.fname, c.labels) for c in clips] == [("a.wav", ("Bark",)),
                                                   ("b.wav", ("Bark", "Meow"))]
    assert clips[0].uri == str(root / "train_curated" / "a.wav")


def test_audio_folders_and_truth(root):
    assert [c.fname for c in list_audio(str(root / "test"))] == ["t0.flac", "t1.wav"]
    assert read_truth(str(root / "test_truth.csv")) == {"t1.wav": ["Meow"]}
    assert read_truth(str(root / "missing.csv")) is None


@pytest.mark.bad_input
@pytest.mark.parametrize("row, message", [
    ("../x.wav,Bark", "train_curated.csv line 3: unsafe fname '../x.wav'"),
    ("a.wav,Bark", "train_curated.csv line 3: duplicate fname 'a.wav' (first on line 2)"),
    ("c.wav,Moo", "train_curated.csv line 3: label 'Moo' of c.wav is not in the class vocabulary"),
    ("c.wav,", "train_curated.csv line 3: c.wav has no label"),
])
def test_bad_rows_are_named(root, row, message):
    (root / "train_curated.csv").write_text(f"fname,labels\na.wav,Bark\n{row}\n")
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_split(str(root), "train_curated", ["Meow", "Bark"])


def test_vocabulary_without_submission_is_the_sorted_union(root):
    (root / "sample_submission.csv").unlink()
    assert class_vocabulary(str(root)) == ["Bark", "Meow"]


def test_clips_digest_changes_with_names_and_labels_not_order():
    a, b = Clip("a.wav", ("Bark", "Meow"), "x/a.wav"), Clip("b.wav", ("Meow",), "x/b.wav")
    digest = clips_digest([a, b])
    assert clips_digest([b, Clip("a.wav", ("Meow", "Bark"), "elsewhere/a.wav")]) == digest
    assert clips_digest([a]) != digest
    assert clips_digest([a, Clip("b.wav", ("Bark",), "x/b.wav")]) != digest


@pytest.mark.bad_input
def test_a_repeated_column_is_named_not_renamed(root):
    (root / "sample_submission.csv").write_text("fname,Meow,Bark,Meow\nt1.wav,0,0,0\n")
    with pytest.raises(ManifestError) as repeated:
        class_vocabulary(str(root))  # pandas alone would have made a class 'Meow.1'
    assert str(repeated.value) == (f"{root / 'sample_submission.csv'}: duplicate column 'Meow' "
                                   "(columns 2, 4)")


def test_versions_digest_follows_file_versions_not_order():
    digest = versions_digest({"a.wav": "10:1", "b.wav": ""})
    assert versions_digest({"b.wav": "", "a.wav": "10:1"}) == digest
    assert versions_digest({"a.wav": "10:2", "b.wav": ""}) != digest  # a touched file
    assert versions_digest({"a.wav": "10:1", "b.wav": "7:3"}) != digest  # a file appeared


def test_an_empty_split_is_not_one_of_the_dataset_but_an_empty_csv_beside_audio_is(root):
    (root / "train_noisy.csv").write_text("fname,labels\n")
    (root / "train_noisy").mkdir()  # as a synthetic dataset without noisy clips writes it
    assert available_splits(str(root)) == ["train_curated", "test"]
    (root / "train_noisy" / "n.wav").write_bytes(b"")
    assert available_splits(str(root)) == ["train_curated", "train_noisy", "test"]
    assert split_source(str(root), "train_noisy") == str(root / "train_noisy.csv")
    assert split_source(str(root), "test") == str(root / "sample_submission.csv")
    (root / "sample_submission.csv").unlink()
    assert split_source(str(root), "test") == str(root / "test")
