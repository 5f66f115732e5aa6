// Limits (parser, reassembly) are merged with their defaults once per options
// object and shared, frozen, by every parser or session made with it: not one
// copy per connection or session (RSS per idle anchored session).
// Callers pass options objects they do not mutate afterwards.

const merged = new WeakMap<object, WeakMap<object, object>>();

/** `defaults` overridden by `partial`, frozen; the same object for the same `partial`. */
export function mergeLimits<T extends object>(defaults: Readonly<T>, partial: Partial<T> | undefined): Readonly<T> {
  if (partial === undefined) return defaults;
  let byPartial = merged.get(defaults);
  if (byPartial === undefined) {
    byPartial = new WeakMap();
    merged.set(defaults, byPartial);
  }
  let limits = byPartial.get(partial) as Readonly<T> | undefined;
  if (limits === undefined) {
    limits = Object.freeze({ ...defaults, ...partial });
    byPartial.set(partial, limits);
  }
  return limits;
}
