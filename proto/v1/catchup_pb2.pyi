from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CatchupRequest(_message.Message):
    __slots__ = ("since_ms", "after_sequence", "max_commands")
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    since_ms: int
    after_sequence: int
    max_commands: int
    def __init__(self, since_ms: _Optional[int] = ..., after_sequence: _Optional[int] = ..., max_commands: _Optional[int] = ...) -> None: ...

class CatchupBatch(_message.Message):
    __slots__ = ("commands", "sequences", "last_sequence", "done", "error")
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedScalarFieldContainer[bytes]
    sequences: _containers.RepeatedScalarFieldContainer[int]
    last_sequence: int
    done: bool
    error: str
    def __init__(self, commands: _Optional[_Iterable[bytes]] = ..., sequences: _Optional[_Iterable[int]] = ..., last_sequence: _Optional[int] = ..., done: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...
