"""Console tables stay aligned on screen whatever script the names are written in."""

from faceproc.core.text import aligned_table, display_width, key_values, plural


def test_display_width_counts_cjk_as_two_columns_and_accents_as_none():
    assert display_width("abc.jpg") == 7
    assert display_width("张伟.jpg") == 8
    assert display_width("e\u0301") == 1  # e + combining acute accent


def test_aligned_table_lines_up_cjk_ascii_and_accented_names():
    rows = [["张伟.jpg", "0.91"], ["ben.jpg", "1.00"], ["re\u0301sume\u0301.jpg", "0.5"]]
    lines = aligned_table(["photo", "probability"], rows, right={"probability"})
    # every line ends at the same screen column, and the numbers end in it
    assert len({display_width(line) for line in lines}) == 1
    assert lines[2].endswith("0.91") and lines[4].endswith(" 0.5")
    assert lines[1] == "-" * 10 + "  " + "-" * 11


def test_key_values_puts_values_in_one_screen_column():
    text = key_values([("照片", 3), ("faces", 4)])
    first, second = text.splitlines()
    assert display_width(first[: first.index("3")]) == display_width(second[: second.index("4")])


def test_plural():
    assert plural(1, "epoch") == "1 epoch" and plural(0, "epoch") == "0 epochs"
