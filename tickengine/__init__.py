"""tickengine: the pure simulation core of the treasure hunt.

NumPy + Numba only: no I/O, no threads of its own, no logging. State lives in
struct-of-arrays buffers allocated once; a tick is a function of (state,
inputs) -> (state, events), deterministic for a seed whatever the thread count.
The rules are in docs/rules.md.

Layout: every module is private (``tickengine._x``); this file re-exports the
public API, and tests/test_exports.py guards it. ``tickengine.reference`` is the
slow pure-Python oracle of the same rules.
"""

from ._bots import BOT_POLICIES as BOT_POLICIES
from ._bots import HUNTER as HUNTER
from ._bots import RANDOM as RANDOM
from ._bots import Bots as Bots
from ._config import EngineConfig as EngineConfig
from ._config import HuntParams as HuntParams
from ._config import WorldConfig as WorldConfig
from ._config import load_config as load_config
from ._config import parse_config as parse_config
from ._dtypes import DISCOVERY_DTYPE as DISCOVERY_DTYPE
from ._dtypes import JOINED as JOINED
from ._dtypes import LEADER_DTYPE as LEADER_DTYPE
from ._dtypes import LEFT as LEFT
from ._dtypes import MEMBERSHIP_DTYPE as MEMBERSHIP_DTYPE
from ._dtypes import RESULT_DTYPE as RESULT_DTYPE
from ._dtypes import ROUND_END_DTYPE as ROUND_END_DTYPE
from ._dtypes import VIS_IN_VIEW as VIS_IN_VIEW
from ._dtypes import VISIBLE_DTYPE as VISIBLE_DTYPE
from ._errors import CapacityError as CapacityError
from ._errors import ConfigError as ConfigError
from ._errors import HuntFullError as HuntFullError
from ._errors import RoundError as RoundError
from ._errors import SnapshotError as SnapshotError
from ._errors import StalePlayerError as StalePlayerError
from ._errors import TickEngineError as TickEngineError
from ._errors import UnknownHuntError as UnknownHuntError
from ._moves import MoveBuffer as MoveBuffer
from ._roundplan import RoundPlan as RoundPlan
from ._roundplan import RoundSpec as RoundSpec
from ._rounds import RoundState as RoundState
from ._warmup import WarmUpReport as WarmUpReport
from ._warmup import warm_up as warm_up
from ._world import PHASES as PHASES
from ._world import PlayerInfo as PlayerInfo
from ._world import TickResult as TickResult
from ._world import Visibility as Visibility
from ._world import World as World
from ._world import make_player_id as make_player_id

__version__ = "0.1.0"
