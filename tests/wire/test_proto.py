"""Wire compatibility of the generated protobuf code and the command registry.

The expected values are not re-typed here: they are parsed at test time from the protocol
reference (``shared/protocol/messages.md`` and ``commands.md``) and compared with the
generated descriptors and with ``teamtalk_py.protocol.registry``. The reference lives next
to the repository clone (``<parent>/shared/protocol``) or wherever
``TEAMTALK_PROTOCOL_DIR`` points; the reference-driven tests skip only if neither exists
(and fail instead when ``CI`` is set).

A test over many items (commands, files, messages, enums) checks them all and fails with
one line per wrong item, naming it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import unittest
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

from teamtalk_py.pb.IM import (
    BaseDefine_pb2,
    Buddy_pb2,
    Extension_pb2,
    File_pb2,
    Group_pb2,
    Login_pb2,
    Message_pb2,
    Other_pb2,
    Server_pb2,
    SwitchService_pb2,
)
from teamtalk_py.protocol import registry
from tests.support import TestCase

REPO_ROOT = Path(__file__).resolve().parents[2]
PB_IM_DIR = REPO_ROOT / "teamtalk_py" / "pb" / "IM"
#: teamtalk_py's own extension, documented in the repository (not in the TeamTalk reference).
EXTENSION_DOC = REPO_ROOT / "docs" / "EXTENSION.md"
EXTENSION_FILE = "IM.Extension.proto"

PB_MODULES: dict[str, ModuleType] = {
    m.DESCRIPTOR.name: m
    for m in (
        BaseDefine_pb2,
        Buddy_pb2,
        File_pb2,
        Group_pb2,
        Login_pb2,
        Message_pb2,
        Other_pb2,
        Server_pb2,
        SwitchService_pb2,
    )
}

# "General rules" of messages.md: every file is LITE_RUNTIME, all but IM.Server set the
# java_package, and six files import IM.BaseDefine.proto.
JAVA_PACKAGE = "com.mogujie.tt.protobuf"
FILES_WITHOUT_JAVA_PACKAGE = {"IM.Server.proto"}
FILES_IMPORTING_BASEDEFINE = {
    "IM.Buddy.proto",
    "IM.Login.proto",
    "IM.Message.proto",
    "IM.Group.proto",
    "IM.File.proto",
    "IM.Server.proto",
}

T = TypeVar("T")

_SCALAR_TYPE_NAMES = {
    getattr(FieldDescriptor, name): name.removeprefix("TYPE_").lower()
    for name in dir(FieldDescriptor)
    if name.startswith("TYPE_") and name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}


# --------------------------------------------------------------------------------------
# Locating and parsing the protocol reference
# --------------------------------------------------------------------------------------


def _protocol_dir() -> Path | None:
    candidates = [Path(__file__).resolve().parents[3] / "shared" / "protocol"]
    env = os.environ.get("TEAMTALK_PROTOCOL_DIR")
    if env:
        candidates.append(Path(env))
    for candidate in candidates:
        if (candidate / "messages.md").is_file() and (candidate / "commands.md").is_file():
            return candidate
    return None


def _cells(line: str) -> list[str]:
    """Split one markdown table row into stripped cells (``\\|`` is not a separator)."""
    inner = line.strip()
    inner = inner.removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def _read_table(lines: list[str], start: int) -> tuple[list[str], list[list[str]], int]:
    """Read the table starting at ``lines[start]``: (header, rows, index after the table)."""
    header = _cells(lines[start])
    i = start + 1
    if i >= len(lines) or not re.fullmatch(r"\|?[\s:|-]+\|?", lines[i].strip()):
        raise ValueError(f"line {start + 1}: table without a separator row")
    i += 1
    rows = []
    while i < len(lines) and lines[i].lstrip().startswith("|"):
        rows.append(_cells(lines[i]))
        i += 1
    return header, rows, i


def _code(cell: str) -> str:
    """The text inside the first backtick pair of a cell (or the whole cell)."""
    match = re.search(r"`([^`]*)`", cell)
    return match.group(1) if match else cell.strip()


@dataclass(frozen=True)
class CommandDoc:
    section: str
    service_id: int
    command_id: int
    name: str
    body: str


@dataclass(frozen=True)
class FieldDoc:
    number: int
    label: str
    type: str
    name: str
    default: str | None


@dataclass(frozen=True)
class CarriedBy:
    command_name: str
    command_id: int
    service_name: str
    service_id: int


@dataclass
class MessageDoc:
    file: str
    package: str
    name: str
    carried_by: CarriedBy | None = None
    no_fields: bool = False
    fields: list[FieldDoc] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.package}.{self.name}"


@dataclass
class EnumDoc:
    file: str
    package: str
    name: str
    values: list[tuple[str, int]] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.package}.{self.name}"


@dataclass
class ProtocolDocs:
    commands: list[CommandDoc]
    files: dict[str, str]  # file name -> package
    messages: list[MessageDoc]
    enums: list[EnumDoc]


def _parse_commands(text: str) -> list[CommandDoc]:
    lines = text.splitlines()
    commands: list[CommandDoc] = []
    in_part1 = False
    section: tuple[str, int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            in_part1 = line.startswith("## Part 1")
            section = None
        elif in_part1 and line.startswith("### "):
            match = re.fullmatch(r"### (SID_\w+) = (0x[0-9a-fA-F]+)\s*", line)
            if match is None:
                raise ValueError(f"commands.md line {i + 1}: unexpected heading {line!r}")
            section = (match.group(1), int(match.group(2), 16))
        elif in_part1 and section is not None and line.lstrip().startswith("|"):
            header, rows, i = _read_table(lines, i)
            if header[:3] != ["CID", "Name", "Body"]:
                raise ValueError(f"commands.md: unexpected table header {header!r}")
            for row in rows:
                commands.append(
                    CommandDoc(
                        section=section[0],
                        service_id=section[1],
                        command_id=int(row[0], 16),
                        name=_code(row[1]),
                        body=_code(row[2]),
                    )
                )
            continue
        i += 1
    return commands


_FILE_HEADING = re.compile(r"## (IM\.\w+\.proto) \(package `([\w.]+)`\)\s*")
_CARRIED_BY = re.compile(
    r"Carried by: `(\w+)` \((0x[0-9a-fA-F]+)\), service `(\w+)` \((0x[0-9a-fA-F]+)\)\."
)
_NAME_CELL = re.compile(r"`(\w+)`(?:\s*\[default\s*=\s*(\w+)\])?\s*")


def _parse_messages(text: str) -> tuple[dict[str, str], list[MessageDoc], list[EnumDoc]]:
    lines = text.splitlines()
    files: dict[str, str] = {}
    messages: list[MessageDoc] = []
    enums: list[EnumDoc] = []
    current_file: tuple[str, str] | None = None
    current: MessageDoc | EnumDoc | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            match = _FILE_HEADING.fullmatch(line)
            current_file = (match.group(1), match.group(2)) if match else None
            if current_file:
                files[current_file[0]] = current_file[1]
            current = None
        elif line.startswith("#### ") and current_file is not None:
            kind, _, name = line[5:].strip().partition(" ")
            if kind == "message":
                current = MessageDoc(current_file[0], current_file[1], name)
                messages.append(current)
            elif kind == "enum":
                current = EnumDoc(current_file[0], current_file[1], name)
                enums.append(current)
            else:
                raise ValueError(f"messages.md line {i + 1}: unexpected heading {line!r}")
        elif isinstance(current, MessageDoc) and line.startswith("Carried by:"):
            match = _CARRIED_BY.match(line)
            if match is None:
                raise ValueError(f"messages.md line {i + 1}: unparsed {line!r}")
            current.carried_by = CarriedBy(
                match.group(1), int(match.group(2), 16), match.group(3), int(match.group(4), 16)
            )
        elif isinstance(current, MessageDoc) and line.strip() == "No fields.":
            current.no_fields = True
        elif current is not None and line.lstrip().startswith("|"):
            header, rows, i = _read_table(lines, i)
            if isinstance(current, MessageDoc):
                if header[:4] != ["#", "Label", "Type", "Name"]:
                    raise ValueError(f"messages.md {current.name}: header {header!r}")
                for row in rows:
                    name_match = _NAME_CELL.fullmatch(row[3])
                    if name_match is None:
                        raise ValueError(f"messages.md {current.name}: name cell {row[3]!r}")
                    current.fields.append(
                        FieldDoc(
                            number=int(row[0]),
                            label=row[1],
                            type=_code(row[2]),
                            name=name_match.group(1),
                            default=name_match.group(2),
                        )
                    )
            else:
                if header[:2] != ["Name", "Value"]:
                    raise ValueError(f"messages.md {current.name}: header {header!r}")
                current.values.extend((_code(row[0]), int(row[1], 0)) for row in rows)
            current = None  # one table per heading
            continue
        i += 1
    return files, messages, enums


def _load_docs() -> ProtocolDocs | None:
    directory = _protocol_dir()
    if directory is None:
        return None
    files, messages, enums = _parse_messages((directory / "messages.md").read_text("utf-8"))
    commands = _parse_commands((directory / "commands.md").read_text("utf-8"))
    return ProtocolDocs(commands, files, messages, enums)


DOCS = _load_docs()
_NO_DOCS = "protocol reference not found (../shared/protocol or $TEAMTALK_PROTOCOL_DIR)"


def _docs() -> ProtocolDocs:
    """The parsed reference; skips the calling test when it is missing (fails it when
    ``CI`` is set: there the reference must be present)."""
    if DOCS is None:
        if os.environ.get("CI"):
            raise AssertionError(_NO_DOCS + " (CI is set: the protocol tests must run)")
        raise unittest.SkipTest(_NO_DOCS)
    return DOCS


def _mismatches(items: Iterable[T], name: Callable[[T], str], check: Callable[[T], Any]) -> str:
    """Run ``check`` on every item; one line per item it found wrong, naming the item.

    ``check`` returns None when the item is right, else a description of what is wrong.
    An empty ``items`` is itself a mismatch: a check over nothing proves nothing.
    """
    items = list(items)
    if not items:
        return "nothing to check"
    lines = []
    for item in items:
        wrong = check(item)
        if wrong is not None:
            lines.append(f"{name(item)}: {wrong}")
    return "\n".join(lines)


def _differs(actual: Any, expected: Any) -> str | None:
    return None if actual == expected else f"got {actual!r}, expected {expected!r}"


def _set_difference(generated: list[Any], documented: list[Any]) -> str:
    """What differs between two lists that are not equal, as the entries on each side."""
    extra = sorted(set(generated) - set(documented))
    missing = sorted(set(documented) - set(generated))
    if not extra and not missing:  # the same entries, repeated a different number of times
        return f"got {generated!r}, expected {documented!r}"
    return f"generated but not documented {extra}, documented but not generated {missing}"


def _teamtalk_commands() -> dict[int, registry.Command]:
    """The registry without teamtalk_py's extension: TeamTalk's own commands."""
    return {
        cid: c
        for cid, c in registry.COMMANDS.items()
        if c.service_id != Extension_pb2.SID_EXTENSION
    }


# --------------------------------------------------------------------------------------
# Helpers over the generated descriptors
# --------------------------------------------------------------------------------------


def _file_descriptor(file_name: str) -> FileDescriptor:
    if file_name == EXTENSION_FILE:
        return Extension_pb2.DESCRIPTOR
    return PB_MODULES[file_name].DESCRIPTOR


def _message_descriptor(doc: MessageDoc) -> Descriptor | None:
    return _file_descriptor(doc.file).message_types_by_name.get(doc.name)


def _label(fd: FieldDescriptor) -> str:
    if fd.is_repeated:
        return "repeated"
    return "required" if fd.is_required else "optional"


def _type_name(fd: FieldDescriptor) -> str:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return fd.message_type.full_name
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.full_name
    return _SCALAR_TYPE_NAMES[fd.type]


def _default(fd: FieldDescriptor) -> str | None:
    if not fd.has_default_value:
        return None
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values_by_number[fd.default_value].name
    return str(fd.default_value)


def _doc_type(doc: MessageDoc, type_name: str) -> str:
    """Qualify a bare enum/message type name with the package it is written in."""
    if type_name in _SCALAR_TYPE_NAMES.values() or "." in type_name:
        return type_name
    return f"{doc.package}.{type_name}"


def _wrong_fields(doc: MessageDoc) -> str | None:
    """What differs between a documented message and its generated descriptor (number,
    label, type, name and default of every field), or None."""
    descriptor = _message_descriptor(doc)
    if descriptor is None:
        return "not generated"
    expected = sorted(
        (f.number, f.label, _doc_type(doc, f.type), f.name, f.default) for f in doc.fields
    )
    actual = sorted(
        (fd.number, _label(fd), _type_name(fd), fd.name, _default(fd)) for fd in descriptor.fields
    )
    return None if actual == expected else _set_difference(actual, expected)


def _wrong_values(doc: EnumDoc) -> str | None:
    """What differs between a documented enum and the generated one, or None."""
    descriptor = _file_descriptor(doc.file).enum_types_by_name.get(doc.name)
    if descriptor is None:
        return "not generated"
    actual = sorted((v.name, v.number) for v in descriptor.values)
    return None if actual == sorted(doc.values) else _set_difference(actual, sorted(doc.values))


def _load_genproto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("genproto", REPO_ROOT / "scripts" / "genproto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------
# (a) Generated modules are up to date
# --------------------------------------------------------------------------------------


class GeneratedModuleTests(TestCase):
    def test_generated_modules_match_proto_files(self) -> None:
        """Regenerating from proto/ gives byte-identical copies of the committed *_pb2.py
        files and their *_pb2.pyi stubs."""
        genproto = _load_genproto()
        fresh = {p.name: p.read_bytes() for p in genproto.generate(self.tmp_path())}
        committed = {p.name: p.read_bytes() for p in PB_IM_DIR.glob("*_pb2.py*")}
        assert any(name.endswith(".pyi") for name in fresh), "no stubs generated"
        assert sorted(fresh) == sorted(committed), "run: python scripts/genproto.py"
        stale = [name for name in sorted(fresh) if fresh[name] != committed[name]]
        assert stale == [], f"stale generated modules {stale}; run: python scripts/genproto.py"

    def test_generated_modules_import_only_teamtalk_package(self) -> None:
        """No generated module or stub keeps protoc's top-level `from IM import ...`."""
        offenders = [
            p.name
            for p in sorted(PB_IM_DIR.glob("*_pb2.py*"))
            if re.search(r"^from IM import ", p.read_text("utf-8"), re.MULTILINE)
        ]
        assert offenders == [], offenders

    def test_generated_classes_name_their_real_module(self) -> None:
        """Message classes report teamtalk_py.pb.IM.* as __module__, so pickling can find them."""
        wrong = []
        for module in (*PB_MODULES.values(), Extension_pb2):
            for name in module.DESCRIPTOR.message_types_by_name:
                if getattr(module, name).__module__ != module.__name__:
                    wrong.append(f"{module.__name__}.{name}")
        assert wrong == [], wrong


# --------------------------------------------------------------------------------------
# (b) Command table: commands.md Part 1 against the registry
# --------------------------------------------------------------------------------------


class CommandTableTests(TestCase):
    def test_commands_md_was_parsed(self) -> None:
        """The commands.md parser found every service section of Part 1 and no duplicate ids."""
        docs = _docs()
        sections = {c.section for c in docs.commands}
        assert sections == set(BaseDefine_pb2.ServiceID.keys()) - {"SID_INTERNAL"}, sections
        ids = [c.command_id for c in docs.commands]
        duplicates = sorted(hex(i) for i in set(ids) if ids.count(i) > 1)
        assert duplicates == [], duplicates

    def test_registry_has_exactly_the_documented_commands(self) -> None:
        """The registry covers every command of commands.md Part 1 and, besides the
        extension's, nothing else."""
        registered = sorted(_teamtalk_commands())
        documented = sorted(c.command_id for c in _docs().commands)
        assert registered == documented, (
            f"registered, not documented: {[hex(i) for i in registered if i not in documented]}; "
            f"documented, not registered: {[hex(i) for i in documented if i not in registered]}"
        )

    def test_command_matches_commands_md(self) -> None:
        """Service id, command id, enum name and body message of each documented command."""

        def check(doc: CommandDoc) -> str | None:
            try:
                entry = registry.command(doc.command_id)
            except KeyError:
                return f"{doc.command_id:#06x} is not registered"
            return _differs(
                (
                    BaseDefine_pb2.ServiceID.Name(entry.service_id),
                    entry.service_id,
                    entry.command_id,
                    entry.name,
                    entry.message.DESCRIPTOR.full_name,
                ),
                (doc.section, doc.service_id, doc.command_id, doc.name, doc.body),
            )

        wrong = _mismatches(_docs().commands, lambda c: c.name, check)
        assert wrong == "", wrong

    def test_command_enum_constant_matches_commands_md(self) -> None:
        """The generated BaseDefine constant of each command's name has the documented value."""

        def check(doc: CommandDoc) -> str | None:
            return _differs(
                (
                    getattr(BaseDefine_pb2, doc.name, None),
                    getattr(BaseDefine_pb2, doc.section, None),
                ),
                (doc.command_id, doc.service_id),
            )

        wrong = _mismatches(_docs().commands, lambda c: c.name, check)
        assert wrong == "", wrong

    def test_command_high_byte_is_its_service(self) -> None:
        """Every registered command id carries its service id in the high byte."""
        mismatched = [
            c.name for c in registry.COMMANDS.values() if c.command_id >> 8 != c.service_id
        ]
        assert mismatched == [], mismatched

    def test_every_command_enum_value_is_registered(self) -> None:
        """Each value of the *CmdID enums in BaseDefine has a registry entry of the same name."""
        enum_names = [
            "LoginCmdID",
            "BuddyListCmdID",
            "MessageCmdID",
            "GroupCmdID",
            "FileCmdID",
            "SwitchServiceCmdID",
            "OtherCmdID",
        ]
        declared = {
            value.number: value.name
            for enum in enum_names
            for value in BaseDefine_pb2.DESCRIPTOR.enum_types_by_name[enum].values
        }
        registered = {cid: c.name for cid, c in _teamtalk_commands().items()}
        assert registered == declared, (
            f"registered, not declared: {sorted(registered.items() - declared.items())}; "
            f"declared, not registered: {sorted(declared.items() - registered.items())}"
        )

    def test_registry_lookups(self) -> None:
        """command/message_class/service_of/name_of answer for a known id."""
        cid = BaseDefine_pb2.CID_MSG_DATA
        assert registry.command(cid).command_id == cid
        assert registry.message_class(cid) is Message_pb2.IMMsgData
        assert registry.service_of(cid) == BaseDefine_pb2.SID_MSG
        assert registry.name_of(cid) == "CID_MSG_DATA"

    def test_registry_unknown_command(self) -> None:
        """An unassigned id (0x070c) raises KeyError and is named by its hex value."""
        self.assertRaises(KeyError, registry.command, 0x070C)
        self.assertRaises(KeyError, registry.message_class, 0x070C)
        assert registry.name_of(0x0999) == "0x0999"

    def test_registry_is_read_only(self) -> None:
        """COMMANDS cannot be modified at run time."""
        entry = registry.command(BaseDefine_pb2.CID_MSG_DATA)
        with self.assertRaises(TypeError):
            registry.COMMANDS[0x0999] = entry  # type: ignore[index]


# --------------------------------------------------------------------------------------
# (c) Messages and enums: messages.md against the generated descriptors
# --------------------------------------------------------------------------------------


class MessageTests(TestCase):
    def test_messages_md_was_parsed(self) -> None:
        """The messages.md parser found all nine files and a field table or "No fields" for each."""
        docs = _docs()
        assert sorted(docs.files) == sorted(PB_MODULES)
        empty = [m.full_name for m in docs.messages if not m.fields and not m.no_fields]
        assert empty == [], empty
        contradictory = [m.full_name for m in docs.messages if m.fields and m.no_fields]
        assert contradictory == [], contradictory

    def test_file_package_and_options(self) -> None:
        """Package, java_package, optimize_for and imports of each file follow messages.md."""
        docs = _docs()

        def check(file_name: str) -> str | None:
            fd = _file_descriptor(file_name)
            options = fd.GetOptions()
            java = options.java_package if options.HasField("java_package") else None
            expected_java = None if file_name in FILES_WITHOUT_JAVA_PACKAGE else JAVA_PACKAGE
            deps = [d.name for d in fd.dependencies]
            expected_deps = (
                ["IM.BaseDefine.proto"] if file_name in FILES_IMPORTING_BASEDEFINE else []
            )
            return _differs(
                (fd.package, java, options.optimize_for, deps),
                (docs.files.get(file_name), expected_java, options.LITE_RUNTIME, expected_deps),
            )

        wrong = _mismatches(sorted(PB_MODULES), str, check)
        assert wrong == "", wrong

    def test_file_declares_exactly_the_documented_types(self) -> None:
        """Each file declares exactly the messages and enums messages.md lists for it."""
        docs = _docs()

        def check(file_name: str) -> str | None:
            fd = _file_descriptor(file_name)
            documented_messages = sorted(m.name for m in docs.messages if m.file == file_name)
            documented_enums = sorted(e.name for e in docs.enums if e.file == file_name)
            return _differs(
                (sorted(fd.message_types_by_name), sorted(fd.enum_types_by_name)),
                (documented_messages, documented_enums),
            )

        wrong = _mismatches(sorted(PB_MODULES), str, check)
        assert wrong == "", wrong

    def test_message_fields_match_messages_md(self) -> None:
        """Number, label, type, name and default of every field of each message."""

        wrong = _mismatches(_docs().messages, lambda m: m.full_name, _wrong_fields)
        assert wrong == "", wrong

    def test_message_carrier_matches_registry(self) -> None:
        """The "Carried by" command of each message maps back to it in the registry."""

        def check(doc: MessageDoc) -> str | None:
            if doc.carried_by is None:
                owners = [
                    c.name
                    for c in registry.COMMANDS.values()
                    if c.message.DESCRIPTOR.full_name == doc.full_name
                ]
                return f"embedded type is registered as the body of {owners}" if owners else None
            try:
                entry = registry.command(doc.carried_by.command_id)
            except KeyError:
                return f"carrier {doc.carried_by.command_id:#06x} is not registered"
            return _differs(
                (
                    entry.name,
                    BaseDefine_pb2.ServiceID.Name(entry.service_id),
                    entry.service_id,
                    entry.message.DESCRIPTOR.full_name,
                ),
                (
                    doc.carried_by.command_name,
                    doc.carried_by.service_name,
                    doc.carried_by.service_id,
                    doc.full_name,
                ),
            )

        wrong = _mismatches(_docs().messages, lambda m: m.full_name, check)
        assert wrong == "", wrong

    def test_enum_values_match_messages_md(self) -> None:
        """Every name and number of each enum, and no extra values."""
        wrong = _mismatches(_docs().enums, lambda e: e.full_name, _wrong_values)
        assert wrong == "", wrong

    def test_repeated_scalars_are_sent_unpacked(self) -> None:
        """Repeated scalar fields are encoded one tag per element, as the original peers expect."""
        checked = 0
        packed = []
        for module in (*PB_MODULES.values(), Extension_pb2):
            for descriptor in module.DESCRIPTOR.message_types_by_name.values():
                for fd in descriptor.fields:
                    if not fd.is_repeated or fd.type not in (
                        FieldDescriptor.TYPE_UINT32,
                        FieldDescriptor.TYPE_UINT64,
                    ):
                        continue
                    message = getattr(module, descriptor.name)()
                    getattr(message, fd.name).extend([1, 2])
                    tag = bytes([fd.number << 3])  # varint wire type; all such fields are < 16
                    if message.SerializePartialToString() != tag + b"\x01" + tag + b"\x02":
                        packed.append(fd.full_name)
                    checked += 1
        assert packed == [], packed
        assert checked > 0


# --------------------------------------------------------------------------------------
# (d) teamtalk_py's extension: docs/EXTENSION.md against the generated code and registry
# --------------------------------------------------------------------------------------


def _extension_docs() -> ProtocolDocs:
    text = EXTENSION_DOC.read_text("utf-8")
    files, messages, enums = _parse_messages(text)
    return ProtocolDocs(_parse_commands(text), files, messages, enums)


class ExtensionTests(TestCase):
    """The extension is documented as TeamTalk's protocol is, and checked the same way."""

    def test_extension_doc_was_parsed(self) -> None:
        """EXTENSION.md documents the one file, its commands, messages and enums."""
        docs = _extension_docs()
        assert docs.files == {EXTENSION_FILE: "IM.Extension"}
        assert {c.section for c in docs.commands} == {"SID_EXTENSION"}
        assert len(docs.messages) == len(Extension_pb2.DESCRIPTOR.message_types_by_name)

    def test_extension_commands_are_documented_and_registered(self) -> None:
        """Every extension command: documented id, name and body match the registry, and
        the registry has no undocumented one."""
        docs = _extension_docs()
        registered = {
            cid: (c.name, c.message.DESCRIPTOR.full_name, c.service_id)
            for cid, c in registry.COMMANDS.items()
            if c.service_id == Extension_pb2.SID_EXTENSION
        }
        documented = {c.command_id: (c.name, c.body, c.service_id) for c in docs.commands}
        assert registered == documented
        declared = {v.number: v.name for v in Extension_pb2.ExtCmdID.DESCRIPTOR.values}
        assert declared == {cid: names[0] for cid, names in registered.items()}

    def test_extension_ids_are_apart_from_teamtalk(self) -> None:
        """The service id is none of TeamTalk's, and every command id is 0x1000-0x10ff."""
        assert Extension_pb2.SID_EXTENSION not in BaseDefine_pb2.ServiceID.values()
        outside = [
            hex(v.number)
            for v in Extension_pb2.ExtCmdID.DESCRIPTOR.values
            if not 0x1000 <= v.number <= 0x10FF
        ]
        assert outside == [], outside

    def test_extension_messages_match_doc(self) -> None:
        """Number, label, type and name of every field of every extension message."""

        docs = _extension_docs()
        wrong = _mismatches(docs.messages, lambda m: m.full_name, _wrong_fields)
        assert wrong == "", wrong
        documented = sorted(m.name for m in docs.messages)
        assert documented == sorted(Extension_pb2.DESCRIPTOR.message_types_by_name)

    def test_extension_enums_match_doc(self) -> None:
        """Every name and number of each extension enum, and no extra values or enums."""

        docs = _extension_docs()
        wrong = _mismatches(docs.enums, lambda e: e.full_name, _wrong_values)
        assert wrong == "", wrong
        documented = sorted(e.name for e in docs.enums)
        assert documented == sorted(Extension_pb2.DESCRIPTOR.enum_types_by_name)

    def test_extension_carriers_match_registry(self) -> None:
        """The "Carried by" lines of each message name the commands whose body it is."""
        docs = _extension_docs()
        text = EXTENSION_DOC.read_text("utf-8")
        carried: dict[str, set[str]] = {}
        for c in registry.COMMANDS.values():
            if c.service_id == Extension_pb2.SID_EXTENSION:
                carried.setdefault(c.message.DESCRIPTOR.name, set()).add(c.name)
        wrong = []
        for doc in docs.messages:
            section = text.split(f"#### message {doc.name}\n", 1)[1].split("####", 1)[0]
            named = set(re.findall(r"Carried by: `(\w+)`", section))
            if named != carried.get(doc.name, set()):
                wrong.append(f"{doc.name}: documented {sorted(named)}")
        assert wrong == [], wrong
