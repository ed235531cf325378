"""The official step schedules (fvcore ``MultiStepParamScheduler`` + ``WarmupParamScheduler``):
the learning rate of iteration t is base_lr * multiplier(t)."""


class StepSchedule:
    """Multiplier 1.0, times each of ``gammas`` from its milestone iteration on, with an optional
    linear warmup from ``warmup_factor`` over the first ``warmup_iters`` iterations (detectron2's
    linear warmup: factor * (1 - alpha) + alpha with alpha = t / warmup_iters)."""

    def __init__(self, base_lr, milestones=(), gammas=(), warmup_iters=0, warmup_factor=0.001):
        if len(milestones) != len(gammas):
            raise ValueError(f"milestones {milestones} and gammas {gammas} differ in length")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must increase: {milestones}")
        self.base_lr = float(base_lr)
        self.milestones, self.gammas = list(milestones), list(gammas)
        self.warmup_iters, self.warmup_factor = int(warmup_iters), float(warmup_factor)

    def multiplier(self, t):
        value = 1.0
        for milestone, gamma in zip(self.milestones, self.gammas):
            if t >= milestone:
                value = gamma
        if t < self.warmup_iters:
            alpha = t / self.warmup_iters
            value *= self.warmup_factor * (1 - alpha) + alpha
        return value

    def __call__(self, t):
        return self.base_lr * self.multiplier(t)
