/** Driving a scaffolder backend over its REST API: create a task, wait for it, read its events. */
import assert from 'node:assert/strict';

export interface TaskResult {
  id: string;
  status: string;
  logs: string[];
  output: Record<string, any>;
  events: any[];
  rawEvents: string;
}

export async function runTask(
  baseUrl: string,
  body: { templateRef: string; values: Record<string, unknown> },
  headers: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<TaskResult> {
  const created = await fetch(`${baseUrl}/api/scaffolder/v2/tasks`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await created.text();
  assert.equal(created.status, 201, `creating the task: ${created.status} ${text}`);
  const { id } = JSON.parse(text);
  return waitForTask(baseUrl, id, headers, timeoutMs);
}

export async function waitForTask(baseUrl: string, id: string, headers: Record<string, string> = {}, timeoutMs = 60_000): Promise<TaskResult> {
  const deadline = Date.now() + timeoutMs;
  let status = '';
  while (Date.now() < deadline) {
    const task = await (await fetch(`${baseUrl}/api/scaffolder/v2/tasks/${id}`, { headers })).json();
    status = (task as any).status;
    if (['completed', 'failed', 'cancelled'].includes(status)) break;
    await new Promise(resolve => setTimeout(resolve, 200));
  }
  const rawEvents = await (await fetch(`${baseUrl}/api/scaffolder/v2/tasks/${id}/events`, { headers })).text();
  const events = JSON.parse(rawEvents) as any[];
  const logs = events.filter(event => event.type === 'log').map(event => String(event.body?.message ?? ''));
  // A retried task has one completion per run: the last one is this run's.
  const completion = [...events].reverse().find(event => event.type === 'completion');
  return { id, status, logs, output: completion?.body?.output ?? {}, events, rawEvents };
}
