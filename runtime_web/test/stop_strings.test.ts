// Unit tests of streaming stop-string detection (src/stop_strings.ts). Run: cd runtime_web && npm test
import { test } from "node:test";
import assert from "node:assert/strict";
import { StopStringMatcher } from "../src/stop_strings";

/** Pushes deltas in order; returns every push's result, the text shown, and whether it stopped. */
function run(stops: string | string[], deltas: string[], flush = true) {
  const m = new StopStringMatcher(stops);
  const results = deltas.map((d) => m.push(d));
  const shown = results.map((r) => r.emit).join("") + (flush ? m.flush() : "");
  return { results, shown, stopped: m.stopped, emits: results.map((r) => r.emit) };
}

test("a stop string inside a single delta", () => {
  const r = run(["</s>"], ["Hello", " world</s>ignored", "more"]);
  assert.deepEqual(r.results, [
    { emit: "Hello", stopped: false },
    { emit: " world", stopped: true },
    { emit: "", stopped: true },
  ]);
  assert.equal(r.shown, "Hello world");
  assert.equal(r.stopped, true);
});

test("a delta that is exactly the stop string", () => {
  const r = run(["\n\n"], ["a", "b", "\n\n", "c"]);
  assert.deepEqual(r.emits, ["a", "b", "", ""]);
  assert.equal(r.shown, "ab");
});

test("a stop string split across 2 deltas is caught and never shown", () => {
  const r = run(["STOP"], ["Say ST", "OP now"]);
  assert.deepEqual(r.results, [
    { emit: "Say ", stopped: false }, // "ST" held back
    { emit: "", stopped: true },
  ]);
  assert.equal(r.shown, "Say ");
});

test("a stop string split across 3 deltas", () => {
  const r = run(["<|end|>"], ["x <|", "en", "d|> tail"]);
  assert.deepEqual(r.results, [
    { emit: "x ", stopped: false },
    { emit: "", stopped: false },
    { emit: "", stopped: true },
  ]);
  assert.equal(r.shown, "x ");
  // one character per delta
  const chars = run(["<|end|>"], [..."ab<|end|>cd"]);
  assert.equal(chars.shown, "ab");
  assert.equal(chars.results.findIndex((x) => x.stopped), 8);
});

test("a partial prefix that is not a stop is emitted later, in order, nothing lost", () => {
  const r = run(["STOP"], ["go ST", "OMP", " STO", "RE", " S", "T"]);
  assert.deepEqual(r.emits, ["go ", "STOMP", " ", "STORE", " ", ""]);
  assert.equal(r.stopped, false);
  assert.equal(r.shown, "go STOMP STORE ST"); // flush returns the held "ST"
  // overlapping false starts: "aab" with stop "ab" matches at the second "a"
  const o = run(["aab"], ["a", "a", "a", "b", "!"]);
  assert.deepEqual(o.emits, ["", "", "a", "", ""]);
  assert.equal(o.stopped, true);
  assert.equal(o.shown, "a");
});

test("the text shown never contains a stop string, whatever the split", () => {
  const text = "The answer is 42.\nUser: thanks\nAssistant: ok";
  const stops = ["\nUser:", "Assistant:"];
  for (let a = 1; a < text.length; a++) {
    for (let b = a + 1; b <= text.length; b++) {
      const r = run(stops, [text.slice(0, a), text.slice(a, b), text.slice(b)]);
      assert.equal(r.shown, "The answer is 42.", `split ${a},${b}`);
      assert.equal(r.stopped, true);
    }
  }
  // no stop present: every split shows the whole text
  for (let a = 0; a <= text.length; a++) {
    assert.equal(run(["XYZ", "42!"], [text.slice(0, a), text.slice(a)]).shown, text);
  }
});

test("only the tail that could start a stop string is held back", () => {
  const m = new StopStringMatcher(["abcd", "xy"]);
  assert.deepEqual(m.push("hello ab"), { emit: "hello ", stopped: false });
  assert.deepEqual(m.push("c"), { emit: "", stopped: false });       // "abc" held
  assert.deepEqual(m.push("x"), { emit: "abc", stopped: false });    // "x" could start "xy"
  assert.deepEqual(m.push("z"), { emit: "xz", stopped: false });
  assert.deepEqual(m.push("plain text"), { emit: "plain text", stopped: false });
  assert.equal(m.flush(), "");
});

test("multiple stops where one is a prefix of another", () => {
  // "ab" completes first: stop there
  assert.deepEqual(run(["abc", "ab"], ["x a", "b", "c"]).emits, ["x ", "", ""]);
  assert.equal(run(["abc", "ab"], ["x abc"]).shown, "x ");
  // "abc" and "b" both present in one push: the earlier-starting one wins
  assert.equal(run(["b", "abc"], ["xabc"]).shown, "x");
  // "b" completes before "abc" could: generation stops at "b"
  const r = run(["abc", "b"], ["xa", "b", "c"]);
  assert.deepEqual(r.emits, ["x", "a", ""]);
  // both complete in the same push: the earlier-starting "abc" wins
  assert.equal(run(["abc", "b"], ["xa", "bc"]).shown, "x");
  assert.equal(r.shown, "xa");
  // a longer stop whose prefix is not a stop: the shorter partial is still held
  assert.deepEqual(run(["<|im_end|>", "<|"], ["hi <"]).emits, ["hi "]);
  assert.equal(run(["<|im_end|>", "<|"], ["hi <", "|im"]).shown, "hi ");
});

test("a stop at the very start emits nothing", () => {
  const r = run(["###"], ["###", "text"]);
  assert.deepEqual(r.results, [{ emit: "", stopped: true }, { emit: "", stopped: true }]);
  assert.equal(r.shown, "");
  const split = run(["###"], ["#", "#", "# text"]);
  assert.deepEqual(split.emits, ["", "", ""]);
  assert.equal(split.stopped, true);
  assert.equal(split.shown, "");
});

test("flush at the end returns the held-back tail once", () => {
  const m = new StopStringMatcher(["</answer>"]);
  assert.deepEqual(m.push("42 </ans"), { emit: "42 ", stopped: false });
  assert.equal(m.flush(), "</ans");
  assert.equal(m.flush(), "");
  // after a stop, flush gives nothing (the stop string and what follows are dropped)
  const s = new StopStringMatcher(["</answer>"]);
  s.push("42</answer> </ans");
  assert.equal(s.flush(), "");
  // no stops at all: pass-through
  const none = new StopStringMatcher([]);
  assert.deepEqual(none.push("anything"), { emit: "anything", stopped: false });
  assert.equal(none.flush(), "");
});

test("empty deltas and non-ASCII text", () => {
  const r = run(["🛑", "終わり"], ["", "日本語の", "終わ", "", "りです"]);
  assert.deepEqual(r.emits, ["", "日本語の", "", "", ""]);
  assert.equal(r.shown, "日本語の");
  assert.equal(run(["🛑"], ["ok ", "🛑"]).shown, "ok ");
});

test("a single string is accepted; empty, non-string and more than 4 stops are rejected", () => {
  assert.equal(run("END", ["aEN", "D"]).shown, "a");
  assert.throws(() => new StopStringMatcher(["ok", ""]), { message: /stop\[1\] is an empty string/ });
  assert.throws(() => new StopStringMatcher(""), { message: /stop\[0\] is an empty string/ });
  assert.throws(() => new StopStringMatcher(["a", 3 as never]), { message: /stop\[1\] must be a string/ });
  assert.throws(() => new StopStringMatcher(["a", "b", "c", "d", "e"]), { message: /at most 4/ });
  assert.doesNotThrow(() => new StopStringMatcher(["a", "b", "c", "d"]));
  assert.throws(() => new StopStringMatcher(5 as never), { message: /string or an array/ });
});
