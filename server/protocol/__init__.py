"""server.protocol: the sans-IO wire protocol between hunt clients and the server.

Bytes in, events out; events in, bytes out. No sockets, no Trio, no logging:
the server moves the bytes, this package gives them meaning, and every layout
is tested byte for byte without a network. The format is in docs/protocol.md;
the byte-exact vectors in tests/protocol_vectors.json.

Layout: private modules, public re-exports (this file).

- ``_constants``: version, message types, error and close codes, limits.
- ``_records``: NumPy dtypes of the records inside frames.
- ``_errors``: ProtocolError (code, close code), Remote- vs LocalProtocolError.
- ``_messages``: the events, frozen dataclasses validated in the constructor.
- ``_codec``: ``encode`` and the decoders of each side, routed by the type byte.
- ``_rounds``: ROUND and RESULTS, the messages of round-based hunts.
- ``_tick``: version-1 TICK messages: the server's reusable-buffer writer, the decoder.
- ``_compact``: version-2 (compact) TICKs: the reference writer, the stateful decoder.
- ``_ingest``: MOVES frames decoded into preallocated columns (no object per move).
"""

from ._codec import decode_client_frame as decode_client_frame
from ._codec import decode_server_frame as decode_server_frame
from ._codec import encode as encode
from ._codec import frame_type as frame_type
from ._compact import CompactTickWriter as CompactTickWriter
from ._compact import TickDecoder as TickDecoder
from ._compact import encode_hunt_section as encode_hunt_section
from ._compact import encode_names as encode_names
from ._constants import CLOSE_CODES as CLOSE_CODES
from ._constants import CLOSE_REDIRECT as CLOSE_REDIRECT
from ._constants import MAX_CLIENT_FRAME_BYTES as MAX_CLIENT_FRAME_BYTES
from ._constants import MAX_CLIENT_SEQ as MAX_CLIENT_SEQ
from ._constants import MAX_HUNT_BYTES as MAX_HUNT_BYTES
from ._constants import MAX_JSON_MOVE_CHARS as MAX_JSON_MOVE_CHARS
from ._constants import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from ._constants import MAX_MOVES_PER_FRAME as MAX_MOVES_PER_FRAME
from ._constants import MAX_NAME_BYTES as MAX_NAME_BYTES
from ._constants import MAX_NODE_BYTES as MAX_NODE_BYTES
from ._constants import MAX_RESULT_ROWS as MAX_RESULT_ROWS
from ._constants import MAX_SEQ as MAX_SEQ
from ._constants import MAX_SERVER_FRAME_BYTES as MAX_SERVER_FRAME_BYTES
from ._constants import MAX_TICKET_BYTES as MAX_TICKET_BYTES
from ._constants import MAX_URL_BYTES as MAX_URL_BYTES
from ._constants import NOT_FATAL as NOT_FATAL
from ._constants import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._constants import REFUSAL_CODES as REFUSAL_CODES
from ._constants import RESUME_TOKEN_BYTES as RESUME_TOKEN_BYTES
from ._constants import SUPPORTED_VERSIONS as SUPPORTED_VERSIONS
from ._constants import TICK_HEADER_BYTES as TICK_HEADER_BYTES
from ._constants import ErrorCode as ErrorCode
from ._constants import MessageType as MessageType
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._ingest import MoveBatch as MoveBatch
from ._ingest import decode_moves_into as decode_moves_into
from ._messages import Bye as Bye
from ._messages import ErrorMessage as ErrorMessage
from ._messages import Hello as Hello
from ._messages import Move as Move
from ._messages import Moves as Moves
from ._messages import NameEntry as NameEntry
from ._messages import Redirect as Redirect
from ._messages import Refused as Refused
from ._messages import TickUpdate as TickUpdate
from ._messages import Welcome as Welcome
from ._records import DISCOVERY_RECORD as DISCOVERY_RECORD
from ._records import LEADER_RECORD as LEADER_RECORD
from ._records import LEAVE_RECORD as LEAVE_RECORD
from ._records import MOVE_RECORD as MOVE_RECORD
from ._records import RESULT_RECORD as RESULT_RECORD
from ._records import VISIBLE_RECORD as VISIBLE_RECORD
from ._rounds import END_ALL_FOUND as END_ALL_FOUND
from ._rounds import END_SCORE as END_SCORE
from ._rounds import END_TIME as END_TIME
from ._rounds import PHASE_LOBBY as PHASE_LOBBY
from ._rounds import PHASE_OVER as PHASE_OVER
from ._rounds import PHASE_RESULTS as PHASE_RESULTS
from ._rounds import PHASE_RUNNING as PHASE_RUNNING
from ._rounds import PHASES as PHASES
from ._rounds import Results as Results
from ._rounds import Round as Round
from ._rounds import results_header as results_header
from ._tick import NO_EVENTS as NO_EVENTS
from ._tick import HuntEvents as HuntEvents
from ._tick import TickMessageWriter as TickMessageWriter
from ._tick import encode_hunt_events as encode_hunt_events
from ._tick import tick_message_size as tick_message_size
