// The active configuration as the console last saw it; panels re-render when it changes.

const listeners = new Set();

export const store = {
  config: null,

  setConfig(config) {
    if (!config || (this.config && this.config.version === config.version && this.config.created_at === config.created_at)) {
      return;
    }
    if (this.config && config.version < this.config.version) return;
    this.config = config;
    for (const listener of listeners) listener(config);
  },

  onConfig(listener) {
    listeners.add(listener);
  },

  reset() {
    this.config = null;
  },
};
