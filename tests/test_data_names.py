"""Class names: duplicates, empty names and control characters are refused with file, line and value."""

from __future__ import annotations

import pytest

from yolol_tf.data.names import check_names
from yolol_tf.data.yolo import find_dataset
from yolol_tf.errors import UserError


@pytest.fixture
def yaml_dataset(make_yolo_dataset):
    """``yaml_dataset(folder, names_block)``: the tiny dataset in folder/ds with ``names_block`` (YAML text
    starting at line 4) as its names."""

    def write(folder, names_block: str):
        data = make_yolo_dataset(folder / "ds", "ultralytics")
        data.write_text("path: .\ntrain: images/train\nval: images/val\n" + names_block)
        return data

    return write


@pytest.fixture
def folder_dataset(make_yolo_dataset):
    """``folder_dataset(folder, classes)``: the tiny dataset in folder/ds, a plain folder with ``classes`` as
    its classes.txt."""

    def write(folder, classes: str):
        root = make_yolo_dataset(folder / "ds", "folder")
        (root / "classes.txt").write_text(classes, encoding="utf-8")
        return root

    return write


def _refusal(data) -> str:
    with pytest.raises(UserError) as e:
        find_dataset(data)
    assert e.value.exit_code == 2
    return e.value.message


@pytest.mark.parametrize(
    "block, line, received, what",
    [
        ("names:\n  - apple\n  - banana\n  - apple\n", 7, "'apple'", "same name as class 0 (line 5)"),
        ("names:\n  - apple\n  - ''\n  - cherry\n", 6, "''", "class 1 has an empty name"),
        ("names:\n  - apple\n  -\n  - cherry\n", 6, "None", "class 1 has an empty name"),
        ("names:\n  - apple\n  - '   '\n  - cherry\n", 6, "'   '", "class 1 has an empty name"),
        ('names:\n  - apple\n  - "ban\\tana"\n  - cherry\n', 6, "'ban\\tana'", "a control character ('\\t')"),
        ('names:\n  - apple\n  - "ban\\nana"\n  - cherry\n', 6, "'ban\\nana'", "a control character ('\\n')"),
        ("names:\n  - apple\n  - no\n  - cherry\n", 6, "False", "Quote the name"),
        ("names: {0: apple, 1: cherry, 2: apple}\n", 4, "'apple'", "same name as class 0 (line 4)"),
        ("names:\n  2: cherry\n  0: apple\n  1: cherry\n", 5, "'cherry'", "same name as class 1 (line 7)"),
        ("names:\n  0: apple\n  1: ''\n  2: cherry\n", 6, "''", "class 1 has an empty name"),
        ('names:\n  0: apple\n  1: "a\\u2028b"\n  2: cherry\n', 6, "'a\\u2028b'", "a line separator"),
    ],
)
def test_bad_names_in_a_data_yaml_list_or_mapping_name_file_line_and_value(
    tmp_path, yaml_dataset, block, line, received, what
):
    data = yaml_dataset(tmp_path, block)
    message = _refusal(data)
    assert message.startswith(f"{data}:{line}: ") and what in message
    assert message.endswith(f"Received: {received}")


@pytest.mark.parametrize(
    "text, line, received, what",
    [
        ("apple\nbanana\napple\n", 3, "'apple'", "same name as class 0 (line 1)"),
        ("apple\nbanana\napple  \n", 3, "'apple'", "same name as class 0 (line 1)"),
        ("apple\n\nbanana\n", 2, "''", "class 1 has an empty name"),
        ("apple\n \t \nbanana\n", 2, "''", "class 1 has an empty name"),
        ("apple\nban\tana\ncherry\n", 2, "'ban\\tana'", "a control character ('\\t')"),
        ("apple\nban\x0cana\ncherry\n", 2, "'ban\\x0cana'", "a control character ('\\x0c')"),
        ("apple\r\nbanana\r\nbanana\r\n", 3, "'banana'", "same name as class 1 (line 2)"),
    ],
)
def test_bad_names_in_classes_txt_name_file_line_and_value(
    tmp_path, folder_dataset, text, line, received, what
):
    root = folder_dataset(tmp_path, text)
    message = _refusal(root)
    assert message.startswith(f"{root / 'classes.txt'}:{line}: ") and what in message
    assert message.endswith(f"Received: {received}")


def test_sound_names_pass_and_trailing_blank_lines_in_classes_txt_are_ignored(
    tmp_path, yaml_dataset, folder_dataset
):
    root = folder_dataset(tmp_path, " apple\nbanana \r\ncherry\n\n  \n")
    assert find_dataset(root).names == ["apple", "banana", "cherry"]
    data = yaml_dataset(tmp_path / "y", "names: {0: apple, 1: 2, 2: Cherry Tomato}\n")
    assert find_dataset(data).names == ["apple", "2", "Cherry Tomato"]


def test_check_names_without_lines_names_the_file():
    with pytest.raises(UserError) as e:
        check_names(["a", "b", "a"], "data.yaml")
    assert e.value.message == (
        "data.yaml: class 2 has the same name as class 0; each class needs its own name, or the two would be "
        "merged. Received: 'a'"
    )
    with pytest.raises(
        UserError, match=r"^data\.yaml: the name of class 1 must be one name. Received: \['x'\]"
    ):
        check_names(["a", ["x"]], "data.yaml")
    assert check_names([0, 1.5, "c"], "data.yaml") == ["0", "1.5", "c"]
