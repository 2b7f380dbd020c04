// A Trigger.dev v2 app, unmodified: @trigger.dev/sdk 2.3.18 Jobs served by @trigger.dev/express,
// for tests/acceptance/test_triggerdev_jobs.py. Tidings indexes it (tidings dev -u URL, or
// POST /v1/apps/sync) and runs its Jobs.
//
//   TRIGGER_API_KEY=tr_dev_... TRIGGER_API_URL=http://127.0.0.1:8288 PORT=... \
//   TASK_LOG=/path node trigger_app.mjs
//
// Every task body appends "<run id> <task>" to TASK_LOG, so a test can count how often each
// ran (a task replayed from the cache does not append).
import { appendFileSync, existsSync } from "node:fs";
import { TriggerClient, cronTrigger, eventTrigger, intervalTrigger, invokeTrigger } from "@trigger.dev/sdk";
import { createExpressServer } from "@trigger.dev/express";
import { z } from "zod";

const client = new TriggerClient({
  id: "tidings-v2",
  apiKey: process.env.TRIGGER_API_KEY,
  apiUrl: process.env.TRIGGER_API_URL,
});
const note = (ctx, what) => appendFileSync(process.env.TASK_LOG, `${ctx.run.id} ${what}\n`);

client.defineJob({
  id: "flow",
  name: "Three tasks, a wait and an event",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.flow" }),
  run: async (payload, io, ctx) => {
    const a = await io.runTask("first", async () => { note(ctx, "first"); return { n: payload.n + 1 }; });
    const b = await io.runTask("second", async () => { note(ctx, "second"); return { n: a.n * 10 }; });
    await io.logger.info("waiting", { b });
    await io.wait("pause", Number(payload.wait ?? 3));
    const c = await io.runTask("third", async () => { note(ctx, "third"); return { n: b.n + 1 }; });
    const sent = await io.sendEvent("announce", { name: "v2.flow.done", payload: { n: c.n } });
    return { n: c.n, sent: sent.id };
  },
});

client.defineJob({
  id: "filtered",
  name: "Only pro orders over 100 from the shop",
  version: "1.0.0",
  trigger: eventTrigger({
    name: "v2.order",
    source: "shop",
    filter: { tier: ["pro"], amount: [{ $gt: 100 }] },
  }),
  run: async (payload) => ({ matched: payload.id }),
});

client.defineJob({
  id: "retrying",
  name: "A task that throws twice",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.flaky" }),
  run: async (payload, io, ctx) => {
    let attempt = 0;
    return await io.runTask("flaky", async (task) => {
      attempt = task.attempts;
      note(ctx, `flaky ${task.attempts}`);
      if (task.attempts < 3) throw new Error(`failure ${task.attempts}`);
      return { attempts: task.attempts };
    }, { retry: { limit: 3, minTimeoutInMs: 100, maxTimeoutInMs: 200, factor: 1 } });
  },
});

client.defineJob({
  id: "typed",
  name: "A payload schema",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.typed", schema: z.object({ userId: z.string() }) }),
  run: async (payload) => ({ user: payload.userId }),
});

const invoked = client.defineJob({
  id: "invoked",
  name: "Invoked by another Job",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.invoked" }),
  run: async (payload, io, ctx) => {
    const progress = await io.createStatus("progress", { label: "Doubling", state: "loading", data: { x: payload.x } });
    await progress.update("progress-done", { label: "Doubled", state: "success", data: { doubled: payload.x * 2 } });
    return { doubled: payload.x * 2 };
  },
});

client.defineJob({
  id: "toolbox",
  name: "The rest of io",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.toolbox" }),
  run: async (payload, io, ctx) => {
    const roll = await io.random("roll", { min: 1, max: 7, round: true });
    const caught = await io.try(
      async () => io.runTask("doomed", async () => { throw new Error("no luck"); }),
      async (error) => ({ caught: String(error.message ?? error) }),
    );
    await io.store.env.set("put", "greeting", { hello: payload.who });
    const stored = await io.store.env.get("get", "greeting");
    const later = await io.sendEvents("later", [{ name: "v2.never", payload: {} }], { deliverAfter: 3600 });
    const cancelled = await io.cancelEvent("cancel", later[0].id);
    const started = await invoked.invoke("invoke", { x: 21 });
    return { started: started.id, roll, caught, stored, cancelled: cancelled.cancelledAt !== undefined && cancelled.cancelledAt !== null };
  },
});

client.defineJob({
  id: "waiter",
  name: "Waits for an approval",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.wait.start" }),
  run: async (payload, io, ctx) => {
    const approval = await io.waitForEvent("approval", {
      name: payload.names ?? "v2.approval",
      source: payload.source,
      filter: { orderId: [payload.orderId] },
      contextFilter: payload.contextFilter,
    }, { timeoutInSeconds: payload.timeout ?? 60 });
    const after = await io.runTask("after", async () => { note(ctx, "after"); return { ok: true }; });
    return { approval, after };
  },
});

const failing = client.defineJob({
  id: "failing",
  name: "Fails when invoked",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.failing" }),
  run: async (payload) => { throw new Error(`refused ${payload.x}`); },
});

client.defineJob({
  id: "parent",
  name: "Invokes two Jobs and waits for them",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.parent" }),
  run: async (payload, io, ctx) => {
    const good = await invoked.invokeAndWaitForCompletion("good", { x: payload.x });
    const bad = await failing.invokeAndWaitForCompletion("bad", { x: payload.x });
    note(ctx, "parent done");
    return {
      good: { ok: good.ok, status: good.status, output: good.output, id: good.id, payload: good.invocation.payload, statuses: good.statuses },
      bad: { ok: bad.ok, status: bad.status, message: bad.error?.message, id: bad.id },
    };
  },
});

// Holds its first task until the file named by payload.gate exists (the test cancels the run
// meanwhile); notes how the SDK stopped the job.
client.defineJob({
  id: "gated",
  name: "A task held open",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.gated" }),
  run: async (payload, io, ctx) => {
    try {
      await io.runTask("hold", async () => {
        note(ctx, "hold");
        while (!existsSync(payload.gate)) await new Promise((resolve) => setTimeout(resolve, 50));
        return { held: true };
      });
      await io.runTask("later", async () => { note(ctx, "later"); return {}; });
    } catch (error) {
      note(ctx, `stopped ${error?.constructor?.name}`);
      throw error;
    }
    return { done: true };
  },
});

client.defineJob({
  id: "every-minute",
  name: "A cron schedule",
  version: "1.0.0",
  trigger: cronTrigger({ cron: "* * * * *" }),
  run: async (payload, io, ctx) => ({ ts: payload.ts, event: ctx.event.name }),
});

client.defineJob({
  id: "each-60s",
  name: "An interval",
  version: "1.0.0",
  trigger: intervalTrigger({ seconds: 60 }),
  run: async (payload, io, ctx) => ({ ts: payload.ts, event: ctx.event.name }),
});

// io.parallel: three children run side by side; one sleeps, one throws once (retried), and
// each child's task body runs once.
client.defineJob({
  id: "fanout",
  name: "Three children in parallel",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.fanout" }),
  run: async (payload, io, ctx) => {
    const squares = await io.parallel("fan", [1, 2, 3], async (n) => {
      const square = await io.runTask(`square-${n}`, async () => { note(ctx, `square ${n}`); return n * n; });
      if (n === 2) await io.wait(`nap-${n}`, payload.nap ?? 2);
      if (n === 3) {
        await io.runTask(`flaky-${n}`, async (task) => {
          note(ctx, `flaky ${task.attempts}`);
          if (task.attempts < 2) throw new Error("not yet");
          return {};
        }, { retry: { limit: 3, minTimeoutInMs: 100, maxTimeoutInMs: 200, factor: 1 } });
      }
      return square;
    });
    note(ctx, "fanout done");
    return { squares };
  },
});

client.defineJob({
  id: "batch",
  name: "Invokes a Job three times and waits for all",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.batch" }),
  run: async (payload, io, ctx) => {
    const ends = await invoked.batchInvokeAndWaitForCompletion("batch", payload.xs.map((x) => ({ payload: { x } })));
    note(ctx, "batch done");
    return ends.map((end) => ({ ok: end.ok, output: end.output, id: end.id }));
  },
});

// Background fetches: Tidings makes the requests (to payload.base, a test's loopback server).
client.defineJob({
  id: "fetcher",
  name: "Background fetches",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.fetch" }),
  run: async (payload, io, ctx) => {
    const base = payload.base;
    const body = await io.backgroundFetch("flaky", `${base}/flaky`, {
      method: "POST", headers: { "x-token": "t1" }, body: JSON.stringify({ q: 1 }),
    }, { retry: { "500-599": { strategy: "backoff", limit: 3, minTimeoutInMs: 100, maxTimeoutInMs: 200, factor: 1 } } });
    const response = await io.backgroundFetchResponse("plain", `${base}/plain`);
    const polled = await io.backgroundPoll("poll", {
      url: `${base}/job`, interval: 10, timeout: 60,
      responseFilter: { status: [200], body: { state: ["done"] } },
    });
    let missing = null;
    try {
      await io.backgroundFetch("missing", `${base}/missing`);
    } catch (error) {
      if (!(error instanceof Error)) throw error; // the SDK's own signals (resume, retry)
      missing = String(error.message);
    }
    note(ctx, "fetched");
    return { body, response: { status: response.status, body: response.body }, polled, missing };
  },
});

// io.waitForRequest: the callback URL is noted in the task log ("url <URL>") for the test to
// POST to, as a third party would.
client.defineJob({
  id: "requester",
  name: "Waits for a request",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.request" }),
  run: async (payload, io, ctx) => {
    const got = await io.waitForRequest("approve", async (url) => { note(ctx, `url ${url}`); },
      { timeoutInSeconds: payload.timeout ?? 60 });
    note(ctx, "answered");
    return { got };
  },
});

// invokeTrigger: no event starts it, only invoke.
const onlyInvoked = client.defineJob({
  id: "invoke-only",
  name: "Started only by invoke",
  version: "1.0.0",
  trigger: invokeTrigger({ schema: z.object({ n: z.number() }) }),
  run: async (payload, io, ctx) => ({ tripled: payload.n * 3, event: ctx.event.name }),
});

client.defineJob({
  id: "caller",
  name: "Invokes an invoke-only Job and waits",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.caller" }),
  run: async (payload, io) => {
    const end = await onlyInvoked.invokeAndWaitForCompletion("call", { n: payload.n });
    return { ok: end.ok, output: end.output, id: end.id };
  },
});

client.defineJob({
  id: "sealed",
  name: "Task params, outputs, errors, statuses and the store (sealed with encrypt_data on)",
  version: "1.0.0",
  trigger: eventTrigger({ name: "v2.sealed" }),
  run: async (payload, io, ctx) => {
    const status = await io.createStatus("mark", { label: "Sealing", state: "loading", data: { mark: payload.status } });
    const kept = await io.runTask("keep", async (task) => { note(ctx, "keep"); return { mark: payload.output, params: task.params }; },
      { params: { mark: payload.params } });
    const caught = await io.try(
      async () => io.runTask("doomed", async () => { note(ctx, "doomed"); throw new Error(payload.error); }),
      async (error) => String(error.message ?? error),
    );
    await io.store.env.set("stash", "sealed-mark", { mark: payload.store });
    await io.wait("pause", 1);  // the Job runs again: its tasks come back from Tidings' cache
    const stored = await io.store.env.get("fetch", "sealed-mark");
    await status.update("mark-done", { state: "success", data: { mark: payload.status, done: true } });
    return { kept, caught, stored };
  },
});

createExpressServer(client, Number(process.env.PORT), "/api/trigger");
