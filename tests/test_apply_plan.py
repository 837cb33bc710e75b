"""The plan of acting on duplicates (:mod:`search.apply_plan`) and the journal (:mod:`search.journal`), on
hand-made groups and files: no model, no catalog."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from search.apply_plan import KEPT_BY_CURATOR, ActionSpec, ActionSpecError, parse_action, plan_actions
from search.cli import main as search_main
from search.duplicates import DuplicateGroup, DuplicateMember
from search.journal import (
    ActionRecord,
    JournalError,
    JournalWriter,
    mark_finished,
    mark_unfinished,
    read_journal,
    unfinished_journals,
)
from tests.conftest import call_in_process


def member(id_: int, path: Path, score: float, *, exact: bool = False, original: bool = False) -> DuplicateMember:
    return DuplicateMember(
        id=id_, path=str(path), score=score, exact=exact, width=10, height=10, size_bytes=1, mtime_ns=0,
        original=original,
    )  # fmt: skip


def group(keeper: Path, *others: tuple[int, Path, float, bool], rule: str = "pixels") -> DuplicateGroup:
    first = member(others[0][0] * 100, keeper, 1.0, exact=True, original=True)
    return DuplicateGroup([first, *(member(i, p, s, exact=e) for i, p, s, e in others)], keeper_rule=rule)


def test_parse_action(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_action("move:dups") == ActionSpec("move", tmp_path / "dups")
    assert str(parse_action("move:dups")) == f"move:{tmp_path / 'dups'}"
    assert [parse_action(kind).kind for kind in ("trash", "hardlink", "symlink")] == ["trash", "hardlink", "symlink"]
    for bad in ("move", "move:", "delete", "trash:x", ""):
        with pytest.raises(ActionSpecError):
            parse_action(bad)


def test_plan_keeps_keepers_and_leaves_reference_and_weak_members_alone(tmp_path: Path) -> None:
    photos, reference = tmp_path / "photos", tmp_path / "archive"
    groups = [
        group(photos / "a.jpg", (1, photos / "b.jpg", 0.999, False), (2, reference / "a.jpg", 1.0, True)),
        # Scored below the plan's threshold (groups found at a lower one) yet the keeper's bytes: acted on.
        group(
            photos / "c.jpg", (3, photos / "x" / "c.jpg", 0.5, True), (4, photos / "d.jpg", 0.97, False), rule="exif"
        ),
    ]
    plan = plan_actions(groups, parse_action("trash"), 0.98, [reference])
    decisions = [(Path(item.path).relative_to(tmp_path).as_posix(), item.decision) for item in plan.items]
    assert decisions == [
        ("photos/a.jpg", "keep"), ("photos/b.jpg", "act"), ("archive/a.jpg", "skip"),
        ("photos/c.jpg", "keep"), ("photos/x/c.jpg", "act"), ("photos/d.jpg", "skip"),
    ]  # fmt: skip
    by_path = {item.path: item for item in plan.items}
    assert by_path[str(reference / "a.jpg")].reason == f"in the reference folder {reference}"
    assert by_path[str(photos / "d.jpg")].reason == "scores 0.9700 against its keeper, below the threshold 0.98"
    assert {item.keeper_rule for item in plan.items if item.group == 2} == {"exif"}
    assert all(item.target is None for item in plan.items)  # trash: no destination
    assert [item.group for item in plan.to_act] == [1, 2]
    payload = plan.to_dict()
    assert payload["action"] == "trash" and payload["to_act"] == 2 and payload["left_alone"] == 2
    assert json.loads(json.dumps(payload))["items"][1]["keeper"] == str(photos / "a.jpg")


def test_move_destinations_never_clash(tmp_path: Path) -> None:
    photos, dups = tmp_path / "photos", tmp_path / "dups"
    (dups / "2019").mkdir(parents=True)
    (dups / "taken.jpg").write_bytes(b"someone's")
    (dups / "2019" / "taken.jpg").write_bytes(b"someone's too")
    groups = [
        group(
            photos / "k1.jpg",
            (1, photos / "2018" / "same.jpg", 1.0, True),
            (2, photos / "2019" / "same.jpg", 1.0, True),
        ),
        group(
            photos / "k2.jpg",
            (3, photos / "2019" / "taken.jpg", 1.0, True),
            (4, photos / "2020" / "new.jpg", 1.0, True),
        ),
    ]
    plan = plan_actions(groups, parse_action(f"move:{dups}"), 0.9)
    targets = {Path(item.path).relative_to(photos).as_posix(): item.target for item in plan.to_act}
    assert targets == {
        "2018/same.jpg": str(dups / "same.jpg"),
        "2019/same.jpg": str(dups / "2019" / "same.jpg"),  # a name clash keeps its path below photos/
        "2019/taken.jpg": str(dups / "2019" / "taken (2).jpg"),  # and then a number
        "2020/new.jpg": str(dups / "new.jpg"),
    }
    inside = plan_actions(
        [group(photos / "k.jpg", (5, dups / "same.jpg", 1.0, True))], parse_action(f"move:{dups}"), 0.9
    )
    assert [(item.decision, item.reason) for item in inside.items[1:]] == [("skip", "already in the move folder")]


def test_members_the_curator_keeps_are_left_alone(tmp_path: Path) -> None:
    """The UI's keep toggles feed the planner: a member toggled to keep is never acted on, not even an
    exact copy, and a move claims no destination for it (so another photo may take its name)."""
    photos, dups = tmp_path / "photos", tmp_path / "dups"
    groups = [
        group(photos / "k.jpg", (1, photos / "a" / "x.jpg", 1.0, True), (2, photos / "b" / "x.jpg", 0.999, False)),
        group(photos / "m.jpg", (3, photos / "c.jpg", 0.999, False)),
    ]
    plan = plan_actions(groups, parse_action(f"move:{dups}"), 0.99, keep_ids={1, 3})
    by_id = {item.image_id: item for item in plan.items}
    assert [(by_id[i].decision, by_id[i].reason, by_id[i].target) for i in (1, 3)] == [
        ("skip", KEPT_BY_CURATOR, None),
        ("skip", KEPT_BY_CURATOR, None),
    ]
    assert [(item.image_id, item.target) for item in plan.to_act] == [(2, str(dups / "x.jpg"))]
    assert plan.to_dict()["left_alone"] == 2
    # Keeping a keeper changes nothing: the keeper is kept anyway.
    assert plan_actions(groups, parse_action("trash"), 0.99, keep_ids={100}).to_dict()["to_act"] == 3


def test_links_already_made_are_left_alone(tmp_path: Path) -> None:
    keeper, linked, other = tmp_path / "k.jpg", tmp_path / "linked.jpg", tmp_path / "other.jpg"
    keeper.write_bytes(b"photo")
    os.link(keeper, linked)
    other.write_bytes(b"photo")
    groups = [group(keeper, (1, linked, 1.0, True), (2, other, 1.0, True))]
    plan = plan_actions(groups, parse_action("hardlink"), 0.9)
    assert [(item.decision, item.reason) for item in plan.items[1:]] == [
        ("skip", "already a hard link of its keeper"),
        ("act", ""),
    ]
    assert plan.items[2].target == str(keeper)


def test_cli_flags_that_need_apply(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for args, message in [
        (["--yes"], "--yes and --journal go with --apply ACTION"),
        (["--journal", "j.jsonl"], "--yes and --journal go with --apply ACTION"),
        (["--apply", "trash", "--csv"], "--csv lists groups"),
    ]:
        result = call_in_process(search_main, capsys, ["duplicates", *args, "--data-dir", str(tmp_path)], tmp_path)
        assert result.returncode == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
    bad = call_in_process(search_main, capsys, ["duplicates", "--apply", "delete"], tmp_path)
    assert bad.returncode == 2 and "expected move:DIR, trash, hardlink or symlink, got 'delete'" in bad.stderr
    assert not list(tmp_path.iterdir())


def record(seq: int, path: str = "/photos/a.jpg") -> ActionRecord:
    return ActionRecord(
        seq=seq, kind="move", path=path, sha256="0" * 64, image_id=seq, keeper="/photos/k.jpg", keeper_id=99,
        keeper_sha256="1" * 64, group=1, score=0.99, keeper_rule="pixels", target="/dups/a.jpg", holding=None,
        saved_row=None, temporary=f".loupe-j-{seq}.tmp",
    )  # fmt: skip


def test_journal_round_trip_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with JournalWriter.create(path, {"id": "j", "catalog_id": "c"}) as journal:
        journal.begin(record(1))
        journal.append({"record": "done", "seq": 1})
        journal.begin(record(2, "/photos/b.jpg"))
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"record": "done", "se')  # the kill came mid-write
    contents = read_journal(path)
    assert contents.torn_tail and contents.header["id"] == "j" and not contents.ended
    assert [(e.action.seq, e.outcome) for e in contents.entries.values()] == [(1, "done"), (2, None)]
    assert [e.action.path for e in contents.interrupted] == ["/photos/b.jpg"]
    assert contents.entries[2].action == record(2, "/photos/b.jpg")

    with JournalWriter.reopen(path) as journal:  # cuts the torn line off before appending
        journal.append({"record": "abandoned", "seq": 2, "message": "nothing was done"})
    again = read_journal(path)
    assert not again.torn_tail and again.entries[2].outcome == "abandoned"
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_journal_errors(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    JournalWriter.create(path, {"id": "j"}).close()
    with pytest.raises(JournalError, match="exists"):
        JournalWriter.create(path, {"id": "k"})
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json", '{"record": "end"}']) + "\n")
    with pytest.raises(JournalError, match="line 2"):
        read_journal(path)
    other = tmp_path / "notes.jsonl"
    other.write_text('{"record": "header", "format": "something else"}\n')
    with pytest.raises(JournalError, match="not a Loupe apply journal"):
        read_journal(other)
    orphan = tmp_path / "orphan.jsonl"
    with JournalWriter.create(orphan, {"id": "o"}) as journal:
        journal.append({"record": "done", "seq": 7})
    with pytest.raises(JournalError, match="never began"):
        read_journal(orphan)


def test_unfinished_journals_are_listed_until_finished(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "mine.jsonl"
    elsewhere.write_text("")
    assert unfinished_journals(data) == []
    mark_unfinished(data, "mine-1234", elsewhere)
    assert unfinished_journals(data) == [elsewhere.resolve()]
    mark_finished(data, "mine-1234")
    assert unfinished_journals(data) == []
