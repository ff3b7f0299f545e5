// A Node.js custom runtime: the Lambda Runtime API loop, as the managed runtime runs it. The
// handler's module is the first argument (default: the callback's, `./handler.mjs`).
const { handler } = await import(process.argv[2] ?? './handler.mjs');

const api = `http://${process.env.AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime`;

for (;;) {
  const next = await fetch(`${api}/invocation/next`);
  const id = next.headers.get('lambda-runtime-aws-request-id');
  const event = await next.json();
  try {
    const result = await handler(event);
    await fetch(`${api}/invocation/${id}/response`, { method: 'POST', body: JSON.stringify(result) });
  } catch (e) {
    const body = JSON.stringify({ errorType: e?.name ?? 'Error', errorMessage: String(e?.message ?? e) });
    await fetch(`${api}/invocation/${id}/error`, { method: 'POST', body });
  }
}
