// Events of one group session record are handled one at a time, in arrival
// order: each runs after the previous one for the same key settled (load,
// run the procedure, persist, hand out the actions). Keys with nothing
// queued hold no memory.
export class PerRecord {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key);
    const next = prev ? prev.then(task, task) : task();
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** Keys with work queued or running. */
  get busy(): number {
    return this.tails.size;
  }
}
