SELECT revision, pruned FROM rate_limits_revision
