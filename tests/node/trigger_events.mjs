// One call of the official Trigger.dev v2 client (@trigger.dev/sdk 2.3.18) against a Tidings
// server, for tests/acceptance/test_triggerdev_events.py.
//
//   node trigger_events.mjs <base-url> <api-key> <operation> [JSON arguments...]
//
// Operations: seed (the seed page's snippet), send <event> [options], sendMany <events>
// [options], cancel <id>, cancelRuns <id>, get <id>, run <id>, statuses <id>, cancelRun <id>,
// runs <job> [options], cancelJobRuns <job>, invoke <job> <payload>.
// Prints one JSON object: {"result": ...} as the client returned it (after its zod schemas
// parsed the answer), or {"error": message} when the client threw (exit status 1).
import { TriggerClient } from "@trigger.dev/sdk";

const [baseUrl, apiKey, operation, ...rest] = process.argv.slice(2);
const args = rest.map((text) => JSON.parse(text));
const client = new TriggerClient({ id: "tidings-test", apiKey, apiUrl: baseUrl });

const operations = {
  seed: () => client.sendEvent({ name: "new.user", payload: { userId: "u_1234567890" } }),
  send: (event, options) => client.sendEvent(event, options),
  sendMany: (events, options) => client.sendEvents(events, options),
  cancel: (id) => client.cancelEvent(id),
  cancelRuns: (id) => client.cancelRunsForEvent(id),
  get: (id) => client.getEvent(id),
  run: (id) => client.getRun(id),
  statuses: (id) => client.getRunStatuses(id),
  cancelRun: (id) => client.cancelRun(id),
  runs: (job, options) => client.getRuns(job, options),
  cancelJobRuns: (job) => client.cancelRunsForJob(job),
  invoke: (job, payload) => client.invokeJob(job, payload),
};

try {
  const result = await operations[operation](...args);
  console.log(JSON.stringify({ result }));
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.message ?? error) }));
  process.exitCode = 1;
}
