"""The context of a placement: the twin profile and the surrogate bundle a result depends on.

Everything the placer computes is a function of the problem, the call's options and this context — never of
what ran earlier in the process. ``Context()`` means the shipped profile and models of each problem's model
and GPU; a user who calibrated their own GPU passes their files::

    ctx = placer.Context.load(profile="my-gpu.json", models="my-models/")
    result = placer.solve(problem, context=ctx)

A profile or a model bundle for another (model, GPU) than the problem's is an error, not a silent mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from surrogate.bundle import Surrogate, load_surrogate
from twin.catalogue import load_profile
from twin.errors import InputError
from twin.profile import Profile
from twin.spec import Instance


@dataclass(frozen=True, eq=False)
class Context:
    """Immutable: the twin ``profile`` (None: the shipped one of each problem) and the surrogate ``models``
    directory (None: the shipped models)."""

    profile: Profile | None = None
    models: Path | None = None

    @classmethod
    def load(cls, profile: str | Path | Profile | None = None, models: str | Path | None = None) -> Context:
        """A context from files: a profile JSON (as ``placer twin calibrate`` writes) and a models directory
        (as ``placer surrogate train`` writes); either may be None for the shipped one."""
        prof = profile if isinstance(profile, Profile) or profile is None else Profile.load(profile)
        if models is not None and not Path(models).is_dir():
            raise InputError("not a directory of surrogate models", source=str(models), field="models",
                             value=str(models))
        return cls(profile=prof, models=None if models is None else Path(models))

    def profile_for(self, problem: Instance) -> Profile:
        """The twin profile for the problem's (model, GPU); an error when the given one is for another."""
        if self.profile is None:
            return load_profile(problem.model, problem.gpu)
        if (self.profile.model, self.profile.gpu) != (problem.model, problem.gpu):
            raise InputError(f"the profile is for {self.profile.model}@{self.profile.gpu} but the instance "
                             f"{problem.name!r} is {problem.model}@{problem.gpu}",
                             field="model", value=problem.model)
        return self.profile

    def surrogate_for(self, problem: Instance) -> Surrogate:
        """The surrogate bundle for the problem's (model, GPU), computing its features with this context's
        profile."""
        profile = None if self.profile is None else self.profile_for(problem)
        return load_surrogate(problem.model, problem.gpu, self.models, profile)


DEFAULT_CONTEXT = Context()
