// TransformStream, TextEncoderStream and TextDecoderStream, which LLRT's streams (for this
// QuickJS) lack, built on its ReadableStream and WritableStream as the Streams standard
// defines them: what is written goes through the transformer's `transform` (as it is when
// there is none) to the readable side, and a write waits until the reader asks for more.
(() => {
  class TransformStream {
    #readable;
    #writable;

    constructor(transformer = {}, writableStrategy = { highWaterMark: 1 }, readableStrategy = { highWaterMark: 0 }) {
      if (transformer.readableType !== undefined || transformer.writableType !== undefined) {
        throw new RangeError("TransformStream: readableType and writableType are not supported");
      }
      let readable;
      // Whether the reader asked for a chunk it has not had yet; a write waits until it
      // has (backpressure), woken by `asked`.
      let demand = false;
      let waiting = null;
      const want = () => new Promise((resolve) => (waiting = resolve));
      const asked = () => {
        demand = true;
        const wake = waiting;
        waiting = null;
        wake?.();
      };
      let ended = false;
      const controller = {
        enqueue(chunk) {
          // Before the enqueue, which may ask for the next chunk at once (a read waiting).
          demand = false;
          readable.enqueue(chunk);
        },
        error(reason) {
          if (ended) return;
          ended = true;
          readable.error(reason);
          writable?.error(reason);
          asked();
        },
        terminate() {
          if (ended) return;
          ended = true;
          readable.close();
          writable.error(new TypeError("the TransformStream was terminated"));
          asked();
        },
        get desiredSize() {
          return readable.desiredSize;
        },
      };
      let writable;
      this.#readable = new ReadableStream(
        {
          start(c) {
            readable = c;
          },
          pull() {
            asked();
          },
          async cancel(reason) {
            ended = true;
            asked();
            await transformer.cancel?.(reason);
            writable.error(reason ?? new TypeError("the TransformStream's readable side was cancelled"));
          },
        },
        readableStrategy,
      );
      // What the transformer throws errors both sides, as the standard has it.
      const guarded = async (step) => {
        try {
          return await step();
        } catch (error) {
          controller.error(error);
          throw error;
        }
      };
      const started = guarded(() => transformer.start?.(controller));
      this.#writable = new WritableStream(
        {
          start(c) {
            writable = c;
            return started;
          },
          async write(chunk) {
            if (!ended && !demand && (readable.desiredSize ?? 0) <= 0) await want();
            if (ended) throw new TypeError("the TransformStream's readable side is gone");
            if (transformer.transform) await guarded(() => transformer.transform(chunk, controller));
            else controller.enqueue(chunk);
          },
          async close() {
            if (ended) return;
            await guarded(() => transformer.flush?.(controller));
            if (!ended) {
              ended = true;
              readable.close();
            }
          },
          async abort(reason) {
            await transformer.cancel?.(reason);
            if (!ended) {
              ended = true;
              readable.error(reason);
            }
          },
        },
        writableStrategy,
      );
    }

    get readable() {
      return this.#readable;
    }

    get writable() {
      return this.#writable;
    }
  }

  class TextEncoderStream extends TransformStream {
    constructor() {
      const encoder = new TextEncoder();
      // A high surrogate that ends a chunk waits for the low one that starts the next.
      let pending = "";
      super({
        transform(chunk, controller) {
          let text = pending + String(chunk);
          pending = "";
          const last = text.charCodeAt(text.length - 1);
          if (last >= 0xd800 && last <= 0xdbff) {
            pending = text.slice(-1);
            text = text.slice(0, -1);
          }
          const bytes = encoder.encode(text);
          if (bytes.byteLength > 0) controller.enqueue(bytes);
        },
        flush(controller) {
          if (pending !== "") controller.enqueue(encoder.encode(pending));
        },
      });
    }
    get encoding() {
      return "utf-8";
    }
  }

  // How many bytes at the end of `bytes` begin a UTF-8 sequence that is not complete.
  const incomplete = (bytes) => {
    for (let back = 1; back <= Math.min(3, bytes.length); back++) {
      const byte = bytes[bytes.length - back];
      if ((byte & 0xc0) === 0x80) continue;
      const length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
      return length > back ? back : 0;
    }
    return 0;
  };

  class TextDecoderStream extends TransformStream {
    #encoding;
    constructor(label = "utf-8", options = {}) {
      if (!["utf-8", "utf8", "unicode-1-1-utf-8"].includes(String(label).trim().toLowerCase())) {
        throw new RangeError(`TextDecoderStream: berth decodes UTF-8 only, not ${label}`);
      }
      // A byte order mark is taken off the start of the stream only, not of each chunk.
      const first = new TextDecoder(label, options);
      const rest = new TextDecoder(label, { ...options, ignoreBOM: true });
      let decoder = first;
      let carried = new Uint8Array(0);
      super({
        transform(chunk, controller) {
          const view = chunk instanceof ArrayBuffer ? new Uint8Array(chunk) : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          const bytes = new Uint8Array(carried.length + view.length);
          bytes.set(carried);
          bytes.set(view, carried.length);
          const keep = incomplete(bytes);
          carried = bytes.slice(bytes.length - keep);
          if (bytes.length === keep) return;
          const text = decoder.decode(bytes.subarray(0, bytes.length - keep));
          decoder = rest;
          if (text.length > 0) controller.enqueue(text);
        },
        flush(controller) {
          if (carried.length > 0) controller.enqueue(decoder.decode(carried));
        },
      });
      this.#encoding = first.encoding;
    }
    get encoding() {
      return this.#encoding;
    }
  }

  globalThis.TransformStream ??= TransformStream;
  globalThis.TextEncoderStream ??= TextEncoderStream;
  globalThis.TextDecoderStream ??= TextDecoderStream;
})();
