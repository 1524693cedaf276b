"""Tasks files, run reports and settings: what a user writes, and the errors they get back.

Every error names the file, the task and the field, so the user can fix it without guessing.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from conftest import REPO

from ceylon_net.core.tasks import RunReport, Task, TaskOutcome
from ceylon_net.core.workfile import load_tasks, load_work
from ceylon_net.errors import ConfigError, TaskFileError
from ceylon_net.settings import AdminSettings, WorkerSettings, env_default

SEED = [
    {"id": 1, "description": "Simple calculation", "difficulty": 2},
    {"id": 2, "description": "Data analysis", "difficulty": 5},
    {"id": "research", "description": "Complex research", "difficulty": 8,
     "required_role": "analyst", "priority": 3, "duration": 1.5},
]
SEED_TASKS = [
    Task(1, "Simple calculation", 2),
    Task(2, "Data analysis", 5),
    Task("research", "Complex research", 8, required_role="analyst", priority=3, duration=1.5),
]


def write(tmp_path, text: str, name: str = "tasks.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path) -> str:
    with pytest.raises(TaskFileError) as exc:
        load_tasks(path)
    assert isinstance(exc.value, ConfigError)  # so the CLIs exit 2
    return str(exc.value)


# --------------------------------------------------------------------------- good files


def test_json_list(tmp_path):
    assert load_tasks(write(tmp_path, json.dumps(SEED))) == SEED_TASKS


def test_json_object_with_tasks(tasks_file):
    assert load_tasks(tasks_file(SEED)) == SEED_TASKS


def test_a_str_path_works_too(tasks_file):
    assert load_tasks(str(tasks_file(SEED))) == SEED_TASKS


def test_json_saved_with_a_byte_order_mark(tmp_path):
    """As Windows editors save it; it was refused in Python's words: "invalid JSON at line 1
    column 1: Unexpected UTF-8 BOM (decode using utf-8-sig)"."""
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(SEED), encoding="utf-8-sig")

    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_tasks(path) == SEED_TASKS


def test_toml_array_of_tables(tmp_path):
    path = write(tmp_path, """
[[tasks]]
id = 1
description = "Simple calculation"
difficulty = 2

[[tasks]]
id = 2
description = "Data analysis"
difficulty = 5

[[tasks]]
id = "research"
description = "Complex research"
difficulty = 8
required_role = "analyst"
priority = 3
duration = 1.5
""", "tasks.toml")

    assert load_tasks(path) == SEED_TASKS


def test_toml_suffix_is_case_insensitive(tmp_path):
    path = write(tmp_path, '[[tasks]]\nid = 1\ndescription = "x"\ndifficulty = 1\n', "T.TOML")

    assert load_tasks(path) == [Task(1, "x", 1)]


def test_defaults_and_integer_duration(tasks_file):
    [task] = load_tasks(tasks_file([{"id": 1, "description": "x", "difficulty": 10,
                                     "duration": 2}]))

    assert (task.required_role, task.priority) == (None, 0)
    assert task.duration == 2.0 and isinstance(task.duration, float)


@pytest.mark.parametrize("difficulty", [1, 10])
def test_difficulty_bounds_are_inclusive(tasks_file, difficulty):
    [task] = load_tasks(tasks_file([{"id": 1, "description": "x", "difficulty": difficulty}]))

    assert task.difficulty == difficulty


def test_int_and_string_ids_do_not_clash(tasks_file):
    tasks = load_tasks(tasks_file([{"id": 1, "description": "a", "difficulty": 1},
                                   {"id": "1", "description": "b", "difficulty": 1}]))

    assert [t.id for t in tasks] == [1, "1"]


# --------------------------------------------------------------------------- bad files


def test_bad_json_names_line_and_column(tmp_path):
    path = write(tmp_path, '{"tasks": [\n  {"id": 1,}\n]}')

    assert error_of(path) == (
        f"{path}: invalid JSON at line 2 column 12: "
        "Expecting property name enclosed in double quotes"
    )


FORMATS_READ = "a tasks file is read as JSON, or as TOML when its name ends in .toml"


def test_empty_json_file(tmp_path):
    path = write(tmp_path, "")

    assert error_of(path) == (f"{path}: invalid JSON at line 1 column 1: Expecting value "
                              f"({FORMATS_READ})")


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("tasks.yaml", "tasks:\n  - id: 1\n    description: x\n    difficulty: 2\n",
         "line 1 column 1: Expecting value"),
        ("tasks.yml", "{tasks: [{id: 1, description: x, difficulty: 2}]}\n",
         "line 1 column 2: Expecting property name enclosed in double quotes"),
    ],
)
def test_a_yaml_file_is_told_which_formats_are_read(tmp_path, name, text, error):
    """Any file not named .toml is read as JSON, and a YAML one was told only "invalid JSON
    at line 1 column 1: Expecting value", as if its JSON had a typo."""
    path = write(tmp_path, text, name)

    assert error_of(path) == f"{path}: invalid JSON at {error} (YAML is not read; {FORMATS_READ})"


def test_a_file_wrong_from_its_first_character_is_told_which_formats_are_read(tmp_path):
    """Likely another format (a wrong JSON file is wrong further on: those keep the error)."""
    path = write(tmp_path, "id,description,difficulty\n1,x,2\n", "tasks.csv")

    assert error_of(path) == (f"{path}: invalid JSON at line 1 column 1: Expecting value "
                              f"({FORMATS_READ})")


def test_bad_toml(tmp_path):
    path = write(tmp_path, "[[tasks]]\nid = \n", "tasks.toml")

    assert error_of(path).startswith(f"{path}: invalid TOML: ")
    assert "line 2" in error_of(path)


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ({"id": 3, "difficulty": 2}, "task #1 (id 3): missing field 'description' (string)"),
        ({"id": 3, "description": "x"}, "task #1 (id 3): missing field 'difficulty' (int 1-10)"),
        ({"description": "x", "difficulty": 2},
         "task #1: missing field 'id' (int (64 bits) or string)"),
    ],
)
def test_missing_field(tasks_file, item, error):
    path = tasks_file([item])

    assert error_of(path) == f"{path}: {error}"


@pytest.mark.parametrize(
    ("text", "shown"),
    [("0", "0"), ("11", "11"), ("-1", "-1"), ('"5"', "'5'"), ("true", "True"),
     ("2.5", "2.5"), ("5.0", "5.0"), ("null", "None"), ("[5]", "[5]")],
)
def test_difficulty_out_of_range(tmp_path, text, shown):
    path = write(tmp_path, '[{"id": 1, "description": "ok", "difficulty": 3},\n'
                           f' {{"id": 7, "description": "bad", "difficulty": {text}}}]')

    assert error_of(path) == (
        f"{path}: task #2 (id 7): field 'difficulty' must be int 1-10, got {shown}"
    )


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"id": 1.5}, "task #1 (id 1.5): field 'id' must be int (64 bits) or string, got 1.5"),
        ({"id": True}, "task #1 (id True): field 'id' must be int (64 bits) or string, got True"),
        ({"id": None}, "task #1 (id None): field 'id' must be int (64 bits) or string, got None"),
        ({"id": 2**64}, "task #1 (id 18446744073709551616): field 'id' must be int (64 bits) "
                        "or string, got 18446744073709551616"),
        ({"description": 5}, "task #1 (id 1): field 'description' must be string, got 5"),
        ({"required_role": 3}, "task #1 (id 1): field 'required_role' must be a role: 1-200 "
                               "printable characters, got 3"),
        ({"required_role": ""}, "task #1 (id 1): field 'required_role' must be a role: 1-200 "
                                "printable characters, got ''"),
        ({"priority": "high"},
         "task #1 (id 1): field 'priority' must be int (64 bits), got 'high'"),
        ({"priority": False}, "task #1 (id 1): field 'priority' must be int (64 bits), got False"),
        ({"priority": 1.0}, "task #1 (id 1): field 'priority' must be int (64 bits), got 1.0"),
        ({"duration": -1},
         "task #1 (id 1): field 'duration' must be a number of seconds from 0 to 1e9, "
         "got -1"),
        ({"duration": "5s"},
         "task #1 (id 1): field 'duration' must be a number of seconds from 0 to 1e9, "
         "got '5s'"),
        ({"duration": True},
         "task #1 (id 1): field 'duration' must be a number of seconds from 0 to 1e9, "
         "got True"),
    ],
)
def test_field_types(tasks_file, changes, error):
    path = tasks_file([{"id": 1, "description": "x", "difficulty": 1, **changes}])

    assert error_of(path) == f"{path}: {error}"


@pytest.mark.parametrize("field, value, said", [
    ("duration", "NaN", "nan"), ("duration", "1e400", "inf"), ("timeout", "Infinity", "inf"),
    ("duration", "1000000000000000000000000000000", "1000000000000000000000000000000"),
    ("timeout", "0", "0")])
def test_a_duration_or_timeout_that_could_never_end_is_refused(tmp_path, field, value, said):
    path = write(tmp_path, f'[{{"id": 1, "description": "x", "difficulty": 1, '
                           f'"{field}": {value}}}]')
    must = "a number of seconds from 0 to 1e9" if field == "duration" \
        else "a number of seconds over 0, at most 1e9"
    assert error_of(path) == f"{path}: task #1 (id 1): field '{field}' must be {must}, " \
                             f"got {said}"


def test_arguments_nested_deeper_than_the_wire_takes_are_refused(tasks_file):
    args: list = []
    for _ in range(150):
        args = [args]
    path = tasks_file([{"id": 1, "description": "x", "difficulty": 1, "handler": "h",
                        "args": args}])
    assert error_of(path) == f"{path}: task #1 (id 1): field 'args' nests lists and maps " \
                             f"more than 100 deep"


@pytest.mark.parametrize("name, text", [
    ("tasks.json", "[" * 200_000),
    ("tasks.toml", "a = " + "[" * 200_000),
])
def test_a_file_nested_too_deeply_to_read_is_refused_not_a_traceback(tmp_path, name, text):
    path = write(tmp_path, text, name)
    assert error_of(path) == f"{path}: lists or tables nested too deeply to read (tasks' " \
                             f"arguments may nest 100 deep)"


def test_a_number_too_long_to_read_is_refused_not_a_traceback(tmp_path):
    path = write(tmp_path, '[{"id": 1, "description": "x", "difficulty": 1, "args": [%s]}]'
                 % ("9" * 5000))
    assert error_of(path) == f"{path}: a number of more than 4,300 digits"


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**1000],
                         ids=["2**64", "-2**63-1", "2**1000"])
def test_an_integer_the_wire_cannot_carry_is_refused_before_anything_starts(tasks_file, value):
    path = tasks_file(json.dumps([{"id": 1, "description": "x", "difficulty": 1, "handler": "h",
                                   "args": [1, {"k": [value]}]}]))
    assert error_of(path) == f"{path}: task #1 (id 1): field 'args' has an integer of " \
                             f"{value.bit_length()} bits (the wire carries -2**63 to 2**64 - 1)"


@pytest.mark.parametrize("field, value, shown", [
    ("args", "[1979-05-27T07:32:00Z]", "a datetime (1979-05-27 07:32:00+00:00)"),
    ("kwargs", "{ when = { day = 1979-05-27 } }", "a date (1979-05-27)"),
    ("args", "[[1, 07:32:00]]", "a time (07:32:00)"),
])
def test_a_toml_date_in_arguments_is_refused_when_the_file_is_read(tmp_path, field, value,
                                                                   shown):
    # It was refused only once the admin served ("task 1 cannot be sent to a worker"), and
    # by ceylon-submit in other words.
    path = write(tmp_path, f'[[tasks]]\nid = 1\ndescription = "x"\ndifficulty = 2\n'
                           f'handler = "h"\n{field} = {value}\n', "tasks.toml")
    said = f"{path}: task #1 (id 1): field {field!r} has {shown}, which the wire does not " \
           f"carry (strings, numbers, booleans, null, lists and maps): give it as a string"
    assert error_of(path) == said
    with pytest.raises(TaskFileError, match=re.escape(said)):
        load_work(path)


@pytest.mark.parametrize("where, args, says", [
    ("args", [list(range(100_001))], "has a list of 100,001 items (at most 100,000)"),
    ("kwargs", {"m": {f"k{i}": i for i in range(10_001)}},
     "has a map of 10,001 keys (at most 10,000)"),
])
def test_arguments_longer_than_a_peer_decodes_are_refused(tasks_file, where, args, says):
    # Sent, the admin would refuse the batch with msgpack's own words, cut short.
    path = tasks_file([{"id": 1, "description": "x", "difficulty": 1, "handler": "h",
                        where: args}])
    assert error_of(path) == f"{path}: task #1 (id 1): field {where!r} {says}"


def test_duplicate_id(tasks_file):
    path = tasks_file([{"id": 1, "description": "a", "difficulty": 1},
                       {"id": 2, "description": "b", "difficulty": 1},
                       {"id": 1, "description": "c", "difficulty": 1}])

    assert error_of(path) == f"{path}: duplicate task id 1"


def test_duplicate_string_id(tasks_file):
    path = tasks_file([{"id": "x", "description": "a", "difficulty": 1},
                       {"id": "x", "description": "b", "difficulty": 1}])

    assert error_of(path) == f"{path}: duplicate task id 'x'"


def test_duplicate_group_name(tmp_path):
    group = {"name": "A", "tasks": [{"description": "x"}]}
    path = write(tmp_path, json.dumps({"groups": [group, group]}))
    with pytest.raises(TaskFileError) as refused:
        load_work(path)
    assert str(refused.value) == f"{path}: duplicate group name 'A'"  # (not "task id 'A#1'")


def test_unknown_field(tasks_file):
    path = tasks_file([{"id": 1, "description": "a", "difficulty": 1},
                       {"id": 2, "description": "b", "difficulty": 1, "prio": 3, "zone": "eu"}])

    message = error_of(path)
    prefix = f"{path}: task #2 (id 2): unknown field 'prio'; allowed: "
    assert message.startswith(prefix)
    allowed = message[len(prefix):].split(", ")
    assert allowed[:6] == ["id", "description", "difficulty", "required_role", "priority",
                           "duration"]


@pytest.mark.parametrize("doc, key", [
    ({"tasks": [{"id": 1, "description": "x", "difficulty": 2}],
      "group": [{"name": "g", "tasks": [{"description": "y"}]}]}, "group"),
    ({"groups": [{"name": "g", "tasks": [{"description": "y"}]}], "task": []}, "task"),
    ({"tasks": [{"id": 1, "description": "x", "difficulty": 2}], "title": "nightly"}, "title"),
])
def test_an_unknown_top_level_key_is_refused_not_its_work_dropped(tmp_path, doc, key):
    # ("group" for "groups": its tasks ran nowhere, and the run said it all went well)
    path = write(tmp_path, json.dumps(doc))
    with pytest.raises(TaskFileError) as refused:
        load_work(path)
    assert str(refused.value) == f"{path}: unknown top-level key {key!r}; allowed: tasks, groups"


def test_load_tasks_refuses_a_top_level_key_besides_tasks(tmp_path):
    path = write(tmp_path, json.dumps({"tasks": [{"id": 1, "description": "x", "difficulty": 2}],
                                       "groups": []}))
    assert error_of(path) == f"{path}: unknown top-level key 'groups'; allowed: tasks"


@pytest.mark.parametrize("text", ["[]", '{"tasks": []}'])
def test_no_tasks(tmp_path, text):
    path = write(tmp_path, text)

    assert error_of(path) == f"{path}: no tasks in the file"


def test_toml_without_tasks(tmp_path):
    path = write(tmp_path, 'title = "nothing to do"\n', "tasks.toml")

    assert error_of(path) == f'{path}: expected a list of tasks or {{"tasks": [...]}}'


@pytest.mark.parametrize("text", ['"tasks"', "5", "null", '{"task": []}', '{"tasks": {"id": 1}}'])
def test_not_a_list_of_tasks(tmp_path, text):
    path = write(tmp_path, text)

    assert error_of(path) == f'{path}: expected a list of tasks or {{"tasks": [...]}}'


@pytest.mark.parametrize(("item", "kind"), [("1", "int"), ('"do it"', "str"), ("[]", "list"),
                                            ("null", "NoneType")])
def test_a_task_must_be_an_object(tmp_path, item, kind):
    path = write(tmp_path, f'[{{"id": 1, "description": "x", "difficulty": 1}}, {item}]')

    assert error_of(path) == f"{path}: task #2: expected an object, got {kind}"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"

    assert error_of(path) == f"{path}: cannot read: No such file or directory"


def test_a_directory_is_not_a_tasks_file(tmp_path):
    assert error_of(tmp_path) == f"{tmp_path}: cannot read: Is a directory"


def test_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "tasks.json"
    path.write_bytes(b'[{"id": 1, "description": "caf\xe9", "difficulty": 1}]')  # latin-1

    assert error_of(path) == f"{path}: not UTF-8 text (byte 30)"


@pytest.mark.parametrize("field", ["id", "priority"])
def test_integers_beyond_64_bits_are_refused(tasks_file, field):
    path = tasks_file([{"id": 1, "description": "x", "difficulty": 1, field: 2**64}])

    assert error_of(path).startswith(f"{path}: task #1 ")
    assert f"field {field!r}" in error_of(path)


# --------------------------------------------------------------------------- run reports


def test_run_report_json_shape():
    report = RunReport(
        [
            TaskOutcome(1, "Simple calculation", 2, "Junior", True, 0.1234567891),
            TaskOutcome("r", "Complex research", 8, "Senior", False, 2.0, "Traceback: boom"),
        ],
        unassigned=[9, "x"],
    )

    data = report.to_json()

    assert data["success_rate"] == 0.5
    assert data["tasks"] == [
        {"id": 1, "description": "Simple calculation", "difficulty": 2, "worker": "Junior",
         "success": True, "seconds": 0.123457},
        {"id": "r", "description": "Complex research", "difficulty": 8, "worker": "Senior",
         "success": False, "seconds": 2.0, "error": "Traceback: boom"},
    ]
    assert data["unassigned"] == [9, "x"]
    assert json.loads(json.dumps(data)) == data


def test_run_report_json_of_an_empty_run():
    data = RunReport().to_json()

    # (none ran: no rate, not 0.0 as it said, a run where every task failed)
    assert (data["success_rate"], data["tasks"], data["unassigned"]) == (None, [], [])


def test_run_report_json_does_not_share_its_lists():
    report = RunReport(unassigned=[1])
    report.to_json()["unassigned"].append(2)

    assert report.unassigned == [1]


@pytest.mark.parametrize(("successes", "rate"), [([True], 1.0), ([False], 0.0),
                                                 ([True, False, True, True], 0.75)])
def test_success_rate(successes, rate):
    outcomes = [TaskOutcome(i, "t", 1, "w", ok, 0.0) for i, ok in enumerate(successes)]

    assert RunReport(outcomes).success_rate == rate


# --------------------------------------------------------------------------- settings


FAST = " (faster, a short pause reads as a peer lost: workers would register again and again)"
FEW = " (fewer slow every heartbeat so far that a lost worker goes unnoticed)"


def test_default_settings_are_valid():
    admin = AdminSettings()
    worker = WorkerSettings("Senior")

    assert (admin.port, admin.workspace, admin.endpoint_host) == (8000, "default", "*")
    assert worker.endpoint == "tcp://127.0.0.1:8000"
    with pytest.raises(dataclasses.FrozenInstanceError):
        admin.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"port": -1}, "--port must be 0-65535, got -1"),
        ({"port": 65536}, "--port must be 0-65535, got 65536"),
        ({"pub_port": 70000}, "--pub-port must be 0-65535, got 70000"),
        ({"pub_port": -5}, "--pub-port must be 0-65535, got -5"),
        ({"port": 9000, "pub_port": 9000}, "--pub-port 9000 must differ from --port"),
        ({"port": 65535}, "--port 65535 leaves no room for the default --pub-port (port+1)"),
        ({"heartbeat": 0}, f"--heartbeat must be at least 0.1 s, got 0{FAST}"),
        ({"heartbeat": -0.5}, f"--heartbeat must be at least 0.1 s, got -0.5{FAST}"),
        ({"heartbeat": 1e-9}, f"--heartbeat must be at least 0.1 s, got 1e-09{FAST}"),
        ({"heartbeat": 0.05}, f"--heartbeat must be at least 0.1 s, got 0.05{FAST}"),
        ({"heartbeat": float("nan")}, f"--heartbeat must be at least 0.1 s, got nan{FAST}"),
        ({"heartbeat": float("inf")}, "--heartbeat must be at most 3600 s, got inf"),
        ({"beats_per_second": 0}, f"--beats-per-second must be at least 1, got 0{FEW}"),
        ({"beats_per_second": 1e-6}, f"--beats-per-second must be at least 1, got 1e-06{FEW}"),
        ({"beats_per_second": 0.5}, f"--beats-per-second must be at least 1, got 0.5{FEW}"),
        ({"liveness": 0}, "--liveness must be at least 2, got 0 (a worker beats once a "
                          "--heartbeat: at 1, one beat a little late would call it lost)"),
        ({"liveness": 1}, "--liveness must be at least 2, got 1 (a worker beats once a "
                          "--heartbeat: at 1, one beat a little late would call it lost)"),
        ({"expect_workers": -1}, "--expect-workers must be 0-1,000,000, got -1"),
        ({"unassignable_timeout": -0.1}, "--unassignable-timeout must be >= 0"),
        ({"lost_wait": -1}, "--lost-wait must be >= 0"),
        ({"lost_wait": float("nan")}, "--lost-wait must be >= 0"),
        ({"prefetch": -1}, "--prefetch must be 0-10000, got -1"),
        ({"workspace": ""}, "workspace '' must be 1-200 printable characters"),
        ({"workspace": "a\nb"}, "workspace 'a\\nb' must be 1-200 printable characters"),
        ({"workspace": "nul\0"}, "workspace 'nul\\x00' must be 1-200 printable characters"),
        ({"workspace": "w" * 201}, f"workspace {'w' * 201!r} must be 1-200 printable characters"),
    ],
)
def test_bad_admin_settings(options, error):
    with pytest.raises(ConfigError) as exc:
        AdminSettings(**options)

    assert str(exc.value) == error


@pytest.mark.parametrize(
    "options",
    [
        {"port": 0},
        {"port": 0, "pub_port": 0},  # both random
        {"port": 65535, "pub_port": 65534},
        {"port": 65534},
        {"workspace": "w" * 200},
        {"unassignable_timeout": 0, "expect_workers": 0},
        {"lost_wait": 0},
        {"bind": "127.0.0.1"},
        {"heartbeat": 0.1, "beats_per_second": 1},  # the fastest pace, the fewest beats
        {"heartbeat": 3600},
    ],
)
def test_good_admin_settings(options):
    AdminSettings(**options)


def test_admin_endpoint_host():
    assert AdminSettings(bind="0.0.0.0").endpoint_host == "*"
    assert AdminSettings(bind="").endpoint_host == "*"
    # (and it is said as every interface is: it was "serving ... on tcp://:PORT" and "running
    # open on :", a review of the CLIs)
    assert AdminSettings(bind="").bind == "0.0.0.0"
    assert AdminSettings(bind="127.0.0.1").endpoint_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"name": ""}, "name '' must be 1-200 printable characters"),
        ({"name": "a\rb"}, "name 'a\\rb' must be 1-200 printable characters"),
        ({"role": ""}, "role '' must be 1-200 printable characters"),
        ({"workspace": "x" * 201}, f"workspace {'x' * 201!r} must be 1-200 printable characters"),
        ({"skill": -1}, "--skill must be 0-10, got -1"),
        ({"skill": 11}, "--skill must be 0-10, got 11"),
        ({"capacity": 0}, "--concurrency must be 1-10000, got 0"),
        ({"capacity": 10_001}, "--concurrency must be 1-10000, got 10001"),
        ({"port": 0}, "--port 0 is not a port to connect to (an admin given --port 0 takes "
                      "a free one and logs it: give that one)"),
        ({"port": 65536}, "--port must be 0-65535, got 65536"),
        ({"time_scale": -1}, "--time-scale must be >= 0"),
        ({"connect_timeout": 0}, "--connect-timeout must be > 0, got 0"),
        ({"admin_peer": ""}, "--admin-peer is empty: give the admin's host name or address"),
    ],
)
def test_bad_worker_settings(options, error):
    with pytest.raises(ConfigError) as exc:
        WorkerSettings(**{"name": "Senior", **options})

    assert str(exc.value) == error


@pytest.mark.parametrize(
    ("peer", "endpoint"),
    [
        ("127.0.0.1", "tcp://127.0.0.1:8000"),
        ("admin.lan", "tcp://admin.lan:8000"),
        ("::1", "tcp://[::1]:8000"),
        ("[fe80::1]", "tcp://[fe80::1]:8000"),
    ],
)
def test_worker_endpoint(peer, endpoint):
    assert WorkerSettings("w", admin_peer=peer).endpoint == endpoint


def test_worker_skill_bounds_are_inclusive():
    assert WorkerSettings("w", skill=0).skill == 0
    assert WorkerSettings("w", skill=10, time_scale=0).skill == 10


def test_env_default(monkeypatch):
    monkeypatch.delenv("CEYLON_PORT", raising=False)
    assert env_default("PORT", 8000, int) == 8000
    monkeypatch.setenv("CEYLON_PORT", "")
    assert env_default("PORT", 8000, int) == 8000
    monkeypatch.setenv("CEYLON_PORT", "9100")
    assert env_default("PORT", 8000, int) == 9100
    monkeypatch.setenv("CEYLON_PORT", "ninety")
    with pytest.raises(ConfigError, match=r"^CEYLON_PORT='ninety' is not a valid int$"):
        env_default("PORT", 8000, int)


def test_parsed_tasks_share_their_role_and_handler_strings():
    # Decoded from the wire, each task's strings are copies; a role or handler names one of a
    # few, so 100,000 queued tasks of one role hold one string, not 100,000.
    from ceylon_net.core.workfile import parse_work

    doc = json.loads(json.dumps({"tasks": [
        {"id": i, "description": "d", "difficulty": 1, "required_role": "gpu-" + "x" * 30,
         "handler": "resize-" + "y" * 30} for i in range(2)]}))
    a, b = parse_work(doc, "submission")[0]
    assert a.required_role == "gpu-" + "x" * 30 and a.handler == "resize-" + "y" * 30
    assert a.required_role is b.required_role and a.handler is b.handler


def test_the_readmes_tasks_files_are_accepted(tmp_path):
    """Every JSON block of the README is a tasks file the admin takes as it is."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme-{i}.json"
        path.write_text(block)
        tasks, groups = load_work(path)
        assert tasks or groups, block


@pytest.mark.timeout(20)
def test_an_int_subclass_in_a_task_field_is_read_as_its_int_at_once():
    """An IntEnum as a task's difficulty or priority (from a program: a file has plain ints)
    is the int it is; asked `in range` as itself, it would walk the 2**64 ints msgpack
    carries."""
    import enum

    from ceylon_net.core.workfile import valid_field

    class Level(enum.IntEnum):
        HIGH = 9

    assert valid_field("difficulty", Level.HIGH) and valid_field("priority", Level.HIGH)
    assert not valid_field("difficulty", True)


def test_a_goal_of_at_least_one_task_reads_in_the_singular():
    """"at least 1 tasks completed" (a review of task groups)."""
    from ceylon_net.core.workfile import goal_from_spec

    assert goal_from_spec("g", {"kind": "at_least", "count": 1}).name == \
        "g: at least 1 task completed"
    assert goal_from_spec("g", {"kind": "at_least", "count": 2}).name == \
        "g: at least 2 tasks completed"


@pytest.mark.parametrize("text", [
    '[[tasks]]\nid = 1\ndescription = "a"\ndifficulty = 1\n',  # (TOML, not named .toml)
    "\n\n",  # (blank)
    "\ntasks:\n  - id: 1\n",  # (YAML of another name, a blank line first)
])
def test_a_file_wrong_on_its_first_line_or_before_anything_is_told_the_formats(tmp_path, text):
    """Only an error at line 1 column 1 had the note: TOML in a file named .txt (line 1
    column 3), a blank file, YAML after a blank line got the bare JSON error (a review)."""
    path = tmp_path / "tasks.txt"
    path.write_text(text)
    with pytest.raises(TaskFileError, match=r"a tasks file is read as JSON, or as TOML when "
                                            r"its name ends in \.toml"):
        load_work(path)
