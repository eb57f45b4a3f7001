"""The control plane: model states, request health, the one lifecycle manager and its entry sources,
recovery, capacity, and the watchers that tell it what changed."""
