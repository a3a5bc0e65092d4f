"""bandit: epsilon-greedy or Thompson sampling over arms, from the rewards the coordinator pushes.

Rewards (count, sum, sum of squares per arm) come from outcome feedback and
arrive with the route table; the agent does not learn between tables.

- Arms with no reward data are explored first (one of them at random).
- epsilon_greedy: with probability ``epsilon`` a uniformly random arm, else the
  arm with the best mean reward (the first such arm on ties).
- thompson: one draw per arm from its posterior, the highest wins. When every
  reward looks Bernoulli-like (0 <= sum <= count and sum_squares <= sum, as
  with rewards in [0, 1]) the posterior is Beta(1 + sum, 1 + count - sum);
  otherwise Normal(mean, std / sqrt(count)), std from the arm's sum of squares
  (the arms' pooled std when an arm has a single reward, 1 when none has more).
- Sticky: the random draws of a request with a key come from a generator
  seeded with blake2b(endpoint, key), so a key keeps its arm for as long as
  the rewards stay as they are. The route-table generation is not in the seed:
  it changes with every table (any endpoint's change, every feedback), and a
  key would be re-drawn each time for no reason. Requests without a key draw
  fresh.
- Feedback is credited to the arm that actually served the key, which the
  serving agent remembers (agent.routing.served_keys), and never recomputed
  from this policy: the choice depends on the rewards the agent held when it
  served, and every feedback changes them (the first reward alone turns every
  other arm into the "explore first" arm), so a recomputation after later
  feedback names another arm for a quarter to a half of the keys.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from milepost.core.routing.policy import Arm, Available, Choice, Policy, routing_pb2


class BanditPolicy(Policy):
    kind = "bandit"

    def __init__(self, endpoint: str, spec: routing_pb2.RoutingPolicy, generation: int) -> None:
        super().__init__(endpoint, spec, generation)
        self.algorithm = spec.bandit
        self.epsilon = spec.epsilon
        names = {arm.name for arm in self.arms}
        self.rewards: dict[str, tuple[float, float, float]] = {
            r.arm: (r.count, r.sum, r.sum_squares) for r in self.spec.rewards if r.arm in names
        }
        with_data = [r for r in self.rewards.values() if r[0] > 0]
        self.bernoulli = all(0 <= s <= c and q <= s + 1e-9 * max(1.0, s) for c, s, q in with_data)
        variances = [(q - s * s / c) / (c - 1) for c, s, q in with_data if c > 1]
        self.pooled_std = math.sqrt(max(sum(variances) / len(variances), 0.0)) if variances else 1.0

    def _rng(self, key: str | None) -> np.random.Generator:
        if key is None:
            return np.random.default_rng()
        digest = hashlib.blake2b(f"{self.endpoint}\0{key}".encode(), digest_size=8).digest()
        return np.random.default_rng(int.from_bytes(digest, "big"))

    def choose(self, key: str | None, available: Available) -> Choice:
        candidates = [arm for arm in self.arms if available(arm)]
        if not candidates:
            raise self._unavailable(self.arms)
        rng = self._rng(key)
        unexplored = [arm for arm in candidates if self.rewards.get(arm.name, (0.0, 0.0, 0.0))[0] <= 0]
        if unexplored:
            return Choice((unexplored[int(rng.integers(len(unexplored)))],))
        if self.algorithm == "epsilon_greedy":
            if rng.random() < self.epsilon:
                return Choice((candidates[int(rng.integers(len(candidates)))],))
            scores = [self._mean(arm) for arm in candidates]
        else:
            scores = [self._draw(arm, rng) for arm in candidates]
        return Choice((candidates[int(np.argmax(scores))],))

    def ready(self, available: Available) -> bool:
        return any(available(arm) for arm in self.arms)

    def _mean(self, arm: Arm) -> float:
        count, total, _ = self.rewards[arm.name]
        return total / count

    def posterior(self, arm: str) -> tuple[str, float, float]:
        """What Thompson sampling draws ``arm``'s score from, once it has rewards: ("beta", a, b)
        for 0/1 rewards (a uniform prior), else ("normal", mean, standard error), the sample's
        own standard deviation or, from one reward, the pooled one."""
        count, total, squares = self.rewards[arm]
        if self.bernoulli:
            return "beta", 1.0 + total, 1.0 + count - total
        mean = total / count
        std = math.sqrt(max((squares - total * mean) / (count - 1), 0.0)) if count > 1 else self.pooled_std
        return "normal", mean, std / math.sqrt(count)

    def _draw(self, arm: Arm, rng: np.random.Generator) -> float:
        kind, p, q = self.posterior(arm.name)
        return float(rng.beta(p, q) if kind == "beta" else rng.normal(p, q))
