"""The partial-rollout replay buffer (report sec. 2.6.2): trajectories carried to the next call.

It holds whole groups whose K samples are not all finished yet: unfinished trajectories
(stopped by the per-iteration token budget) and their finished siblings. Each trajectory
keeps its prompt, the response so far with the log-prob and the iteration (version) of
every token, and its base PRNG key, so continuing it in a later call reproduces an
uninterrupted run under the same params.

The buffer is run state: `to_state()` gives a dict of non-empty numpy arrays (orbax cannot
save zero-size arrays, so every array has a dummy first element) and `from_state` inverts it.
"""

import dataclasses

import numpy as np

from k15_jax.rollout.types import FINISH_NONE


@dataclasses.dataclass
class Trajectory:
    """One sample of one request, as the host driver tracks it (mutable during a call)."""

    request_id: str
    sample: int  # sample index within the group, 0..K-1
    prompt: np.ndarray  # [P] int32
    key: np.ndarray  # [KW] uint32 base key data (2 words for threefry), see sampling.py
    max_new: int  # response-length limit of this trajectory
    response: list[int] = dataclasses.field(default_factory=list)
    logp: list[float] = dataclasses.field(default_factory=list)
    version: list[int] = dataclasses.field(default_factory=list)
    finish: int = FINISH_NONE

    @property
    def done(self) -> bool:
        return self.finish != FINISH_NONE


@dataclasses.dataclass(frozen=True)
class RolloutBuffer:
    """Groups waiting for their unfinished samples, in arrival order (oldest first)."""

    groups: tuple[tuple[Trajectory, ...], ...] = ()

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def num_trajectories(self) -> int:
        return sum(len(g) for g in self.groups)

    @property
    def num_unfinished(self) -> int:
        return sum(not t.done for g in self.groups for t in g)

    @property
    def request_ids(self) -> list[str]:
        return [g[0].request_id for g in self.groups]

    def to_state(self) -> dict:
        """A dict of numpy arrays (each with >= 1 element) for orbax or np.savez."""
        trajs = [t for g in self.groups for t in g]
        ids = [g[0].request_id.encode("utf-8") for g in self.groups]
        meta = np.array(
            [
                [gi, t.sample, t.finish, t.max_new, len(t.prompt), len(t.response)]
                for gi, g in enumerate(self.groups)
                for t in g
            ],
            np.int32,
        ).reshape(-1, 6)

        def cat(parts, dtype):
            flat = [np.zeros((1,), dtype)] + [np.asarray(p, dtype).reshape(-1) for p in parts]
            return np.concatenate(flat)

        return {
            "num": np.array([len(self.groups), len(trajs)], np.int32),
            "meta": np.concatenate([np.zeros((1, 6), np.int32), meta]),
            "id_bytes": cat([np.frombuffer(b, np.uint8) for b in ids], np.uint8),
            "id_len": cat([[len(b)] for b in ids], np.int32),
            "prompt": cat([t.prompt for t in trajs], np.int32),
            "response": cat([t.response for t in trajs], np.int32),
            "logp": cat([t.logp for t in trajs], np.float32),
            "version": cat([t.version for t in trajs], np.int32),
            "key": np.concatenate(
                [np.zeros((1, trajs[0].key.size if trajs else 2), np.uint32)]
                + [t.key.reshape(1, -1) for t in trajs]
            ),
        }

    @classmethod
    def from_state(cls, state: dict) -> "RolloutBuffer":
        """Inverse of `to_state` (accepts arrays restored by orbax)."""
        state = {k: np.asarray(v) for k, v in state.items()}
        n_groups, n_traj = (int(x) for x in state["num"])
        meta = state["meta"][1:]
        id_len = state["id_len"][1:]
        id_bytes = state["id_bytes"][1:].tobytes()
        starts = np.concatenate([[0], np.cumsum(id_len)])
        ids = [id_bytes[starts[i] : starts[i + 1]].decode("utf-8") for i in range(n_groups)]
        p_off = np.concatenate([[0], np.cumsum(meta[:, 4])]) + 1
        r_off = np.concatenate([[0], np.cumsum(meta[:, 5])]) + 1
        groups: list[list[Trajectory]] = [[] for _ in range(n_groups)]
        for i in range(n_traj):
            gi, sample, finish, max_new = (int(x) for x in meta[i, :4])
            rs = slice(r_off[i], r_off[i + 1])
            groups[gi].append(
                Trajectory(
                    request_id=ids[gi],
                    sample=sample,
                    prompt=state["prompt"][p_off[i] : p_off[i + 1]].astype(np.int32),
                    key=state["key"][1 + i].astype(np.uint32),
                    max_new=max_new,
                    response=[int(x) for x in state["response"][rs]],
                    logp=[float(x) for x in state["logp"][rs]],
                    version=[int(x) for x in state["version"][rs]],
                    finish=finish,
                )
            )
        return cls(tuple(tuple(g) for g in groups))
