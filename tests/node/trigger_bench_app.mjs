// P11's Trigger.dev v2 app (bench/p11_trigger.py): P3's function — one no-op task — as a v2
// Job, @trigger.dev/sdk 2.3.18 served by @trigger.dev/express, client id "bench".
//
//   TRIGGER_API_KEY=tr_dev_... TRIGGER_API_URL=http://127.0.0.1:PORT PORT=... node trigger_bench_app.mjs
import { TriggerClient, eventTrigger } from "@trigger.dev/sdk";
import { createExpressServer } from "@trigger.dev/express";

const client = new TriggerClient({
  id: "bench",
  apiKey: process.env.TRIGGER_API_KEY,
  apiUrl: process.env.TRIGGER_API_URL,
});

client.defineJob({
  id: "p3-v2",
  name: "one no-op task",
  version: "1.0.0",
  trigger: eventTrigger({ name: "bench/p3.noop" }),
  run: async (payload, io) => {
    await io.runTask("noop", async () => null);
  },
});

createExpressServer(client, Number(process.env.PORT), "/api/trigger");
