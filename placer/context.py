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
    """Immutable: the twin ``profile`` (None: the shipped one of each problem), the surrogate ``models``
    directory (None: the shipped models) and ``metrics_scrape_interval_s``, a metrics scraper the twin runs
    should include (None: the profile's own setting, none for the shipped profiles; seconds between scrapes of
    vLLM's ``/metrics``, whose stalls the profile's fitted scrape costs price — see
    :class:`twin.profile.StepModel`). The scraper changes twin runs only; the surrogates were trained without.
    """

    profile: Profile | None = None
    models: Path | None = None
    metrics_scrape_interval_s: float | None = None

    @classmethod
    def load(cls, profile: str | Path | Profile | None = None, models: str | Path | None = None, *,
             metrics_scrape_interval_s: float | None = None) -> Context:
        """A context from files: a profile JSON (as ``placer twin calibrate`` writes) and a models directory
        (as ``placer surrogate train`` writes); either may be None for the shipped one."""
        prof = profile if isinstance(profile, Profile) or profile is None else Profile.load(profile)
        if models is not None and not Path(models).is_dir():
            raise InputError("not a directory of surrogate models", source=str(models), field="models",
                             value=str(models))
        return cls(profile=prof, models=None if models is None else Path(models),
                   metrics_scrape_interval_s=metrics_scrape_interval_s)

    def _base_profile(self, problem: Instance) -> Profile:
        if self.profile is None:
            return load_profile(problem.model, problem.gpu)
        if (self.profile.model, self.profile.gpu) != (problem.model, problem.gpu):
            raise InputError(f"the profile is for {self.profile.model}@{self.profile.gpu} but the instance "
                             f"{problem.name!r} is {problem.model}@{problem.gpu}",
                             field="model", value=problem.model)
        return self.profile

    def profile_for(self, problem: Instance) -> Profile:
        """The twin profile for the problem's (model, GPU), with this context's metrics scraper; an error
        when the given profile is for another (model, GPU), or when a scraper is asked of a profile that
        carries no fitted scrape costs."""
        prof = self._base_profile(problem)
        if self.metrics_scrape_interval_s is None:
            return prof
        if self.metrics_scrape_interval_s > 0 and not prof.has_scrape_costs:
            raise InputError(f"profile {prof.name} v{prof.version} carries no fitted metrics-scrape costs "
                             "(fit them with `placer twin calibrate --fit-scrape`)",
                             field="metrics_scrape_interval_s", value=self.metrics_scrape_interval_s)
        return prof.with_scraper(self.metrics_scrape_interval_s)

    def surrogate_for(self, problem: Instance) -> Surrogate:
        """The surrogate bundle for the problem's (model, GPU), computing its features with this context's
        profile (without the scraper: the surrogates model none)."""
        profile = None if self.profile is None else self._base_profile(problem)
        return load_surrogate(problem.model, problem.gpu, self.models, profile)


DEFAULT_CONTEXT = Context()
