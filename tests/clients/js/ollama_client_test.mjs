// Drives the official `ollama` JavaScript client (npm `ollama`) against an Ollama-compatible server.
//
// Usage: node ollama_client_test.mjs URL [EXPECTED_REPLY]
//
// `ollama` is imported by its bare name, so run this file from a directory whose node_modules holds
// the pinned client: scripts/install-test-clients.sh installs it into target/test-clients/node, and
// crates/keel-gateway/tests/clients.rs copies this file there before running it. By hand:
//   cp tests/clients/js/ollama_client_test.mjs target/test-clients/node/ &&
//   node target/test-clients/node/ollama_client_test.mjs http://127.0.0.1:11435
//
// The server must know `llama3.2` (answering EXPECTED_REPLY, when given, to plain requests; a
// `get_weather` tool call with a string `city` argument when tools are offered; listed by
// /api/ps) and must not know `no-such-model`. Prints `ok NAME` / `FAIL NAME: reason` per check and
// ends with exactly `N passed, M failed`; exits 1 if any check failed.

import { Ollama } from 'ollama'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const MODEL = 'llama3.2'
const UNKNOWN = 'no-such-model'
const URL_ = process.argv[2] ?? 'http://127.0.0.1:11434'
const EXPECTED_REPLY = process.argv[3]

const client = new Ollama({ host: URL_ })

const USER = [{ role: 'user', content: 'Say hello.' }]

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather for a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', description: 'The city name' } },
      required: ['city'],
    },
  },
}

const SCHEMA = {
  type: 'object',
  properties: {
    city: { type: 'string' },
    temperature: { type: 'number' },
    conditions: { type: 'string', enum: ['sunny', 'cloudy', 'rainy'] },
  },
  required: ['city', 'temperature', 'conditions'],
}

class CheckFailed extends Error {}

function check(cond, msg) {
  if (!cond) throw new CheckFailed(msg)
}

const isModel = (name) => name === MODEL || name === `${MODEL}:latest`
const show = (v) => JSON.stringify(v)

function checkReplyText(text, what) {
  check(typeof text === 'string' && text !== '', `${what}: empty content ${show(text)}`)
  if (EXPECTED_REPLY !== undefined) {
    check(text === EXPECTED_REPLY, `${what}: content ${show(text)} != expected ${show(EXPECTED_REPLY)}`)
  }
}

function checkVector(vec, what) {
  check(Array.isArray(vec) && vec.length > 0, `${what}: not a non-empty array`)
  check(vec.every((x) => typeof x === 'number' && Number.isFinite(x)), `${what}: non-numeric values`)
}

function parseJson(text, what) {
  try {
    return JSON.parse(text)
  } catch (e) {
    throw new CheckFailed(`${what}: content is not JSON (${e.message}): ${show(text)}`)
  }
}

function checkSchemaValue(v) {
  check(v !== null && typeof v === 'object' && !Array.isArray(v), `not an object: ${show(v)}`)
  for (const key of SCHEMA.required) check(key in v, `required key ${key} missing from ${show(v)}`)
  check(typeof v.city === 'string', `city not a string: ${show(v)}`)
  check(typeof v.temperature === 'number', `temperature not a number: ${show(v)}`)
  check(['sunny', 'cloudy', 'rainy'].includes(v.conditions), `conditions not in enum: ${show(v)}`)
}

function checkToolCalls(calls, what) {
  check(Array.isArray(calls) && calls.length > 0, `${what}: no tool_calls`)
  const fn = calls[0].function
  check(fn.name === 'get_weather', `${what}: tool name ${show(fn.name)}`)
  check(fn.arguments && typeof fn.arguments === 'object', `${what}: arguments not an object: ${show(fn.arguments)}`)
  check(typeof fn.arguments.city === 'string' && fn.arguments.city !== '', `${what}: no string city in ${show(fn.arguments)}`)
}

async function collect(iterable) {
  const out = []
  for await (const part of iterable) out.push(part)
  return out
}

async function expectNotFound(fn, what) {
  try {
    const result = await fn()
    if (result && typeof result[Symbol.asyncIterator] === 'function') await collect(result)
  } catch (e) {
    check(e.name === 'ResponseError', `${what}: ${e.name} instead of ResponseError: ${e.message}`)
    check(e.status_code === 404, `${what}: status_code ${e.status_code} != 404 (${e.message})`)
    // The client extracts `error` only from an application/json body; otherwise it keeps the raw text.
    check(typeof e.error === 'string' && !e.error.trim().startsWith('{'),
      `${what}: error body not parsed as JSON (wrong content-type?): ${show(e.error)}`)
    check(e.error.includes('not found') && e.error.includes(UNKNOWN), `${what}: error ${show(e.error)}`)
    return
  }
  throw new CheckFailed(`${what}: no error for an unknown model`)
}

// ---------------------------------------------------------------------------------------------
// checks

const checks = {
  async version() {
    if (typeof client.version !== 'function') return
    const v = await client.version()
    check(typeof v.version === 'string' && v.version !== '', `version ${show(v)}`)
  },

  async list() {
    const resp = await client.list()
    const names = resp.models.map((m) => m.model ?? m.name)
    check(names.some(isModel), `${MODEL} not in ${show(names)}`)
    const m = resp.models.find((m) => isModel(m.model ?? m.name))
    check(m.size > 0, `size ${m.size}`)
    check(m.digest, 'digest missing')
    check(!Number.isNaN(new Date(m.modified_at).getTime()), `modified_at ${show(m.modified_at)}`)
    check(m.details?.family, `details.family missing: ${show(m.details)}`)
  },

  async show() {
    const resp = await client.show({ model: MODEL })
    check(resp.details?.family, `details.family missing: ${show(resp.details)}`)
    check(resp.model_info && Object.keys(resp.model_info).length > 0, 'model_info missing')
    if (resp.capabilities) check(resp.capabilities.includes('completion'), `capabilities ${show(resp.capabilities)}`)
  },

  async show_unknown_404() {
    await expectNotFound(() => client.show({ model: UNKNOWN }), 'show')
  },

  async ps() {
    const resp = await client.ps()
    const names = resp.models.map((m) => m.model ?? m.name)
    check(names.some(isModel), `${MODEL} not loaded: ${show(names)}`)
    const m = resp.models.find((m) => isModel(m.model ?? m.name))
    check(!Number.isNaN(new Date(m.expires_at).getTime()), `expires_at ${show(m.expires_at)}`)
  },

  async chat() {
    const resp = await client.chat({ model: MODEL, messages: USER })
    check(resp.done === true, `done ${resp.done}`)
    check(resp.message.role === 'assistant', `role ${resp.message.role}`)
    checkReplyText(resp.message.content, 'chat')
    check(resp.done_reason === 'stop', `done_reason ${resp.done_reason}`)
    check(isModel(resp.model), `model ${resp.model}`)
    check(resp.eval_count > 0, `eval_count ${resp.eval_count}`)
  },

  async chat_stream() {
    const parts = await collect(await client.chat({ model: MODEL, messages: USER, stream: true }))
    check(parts.length >= 2, `only ${parts.length} chunk(s): not streamed`)
    check(parts.slice(0, -1).every((p) => p.done === false), 'a chunk before the last has done=true')
    const last = parts[parts.length - 1]
    check(last.done === true && last.done_reason === 'stop', `last chunk ${show(last)}`)
    const text = parts.map((p) => p.message.content ?? '').join('')
    checkReplyText(text, 'chat stream')
    const whole = (await client.chat({ model: MODEL, messages: USER })).message.content
    check(text === whole, `streamed ${show(text)} != non-streamed ${show(whole)}`)
  },

  async chat_options() {
    const resp = await client.chat({
      model: MODEL,
      messages: [{ role: 'system', content: 'Be terse.' }, ...USER],
      options: { temperature: 0, seed: 42, num_predict: 64 },
      keep_alive: '5m',
    })
    checkReplyText(resp.message.content, 'chat with options')
  },

  async generate() {
    const resp = await client.generate({ model: MODEL, prompt: 'Say hello.' })
    check(resp.done === true, `done ${resp.done}`)
    checkReplyText(resp.response, 'generate')
    check(resp.done_reason === 'stop', `done_reason ${resp.done_reason}`)
  },

  async generate_stream() {
    const parts = await collect(await client.generate({ model: MODEL, prompt: 'Say hello.', stream: true }))
    check(parts.length >= 2, `only ${parts.length} chunk(s): not streamed`)
    check(parts[parts.length - 1].done === true, 'last chunk not done')
    const text = parts.map((p) => p.response ?? '').join('')
    checkReplyText(text, 'generate stream')
  },

  async chat_format_schema() {
    const resp = await client.chat({
      model: MODEL,
      messages: [{ role: 'user', content: 'Weather in Paris as JSON.' }],
      format: SCHEMA,
    })
    checkSchemaValue(parseJson(resp.message.content, 'format schema'))
  },

  async chat_format_json() {
    const resp = await client.chat({
      model: MODEL,
      messages: [{ role: 'user', content: 'Reply in JSON.' }],
      format: 'json',
    })
    const v = parseJson(resp.message.content, 'format json')
    check(v !== null && typeof v === 'object', `not a JSON object/array: ${show(v)}`)
  },

  async generate_format_schema() {
    const resp = await client.generate({ model: MODEL, prompt: 'Weather as JSON.', format: SCHEMA })
    checkSchemaValue(parseJson(resp.response, 'generate format schema'))
  },

  async chat_tools() {
    const resp = await client.chat({
      model: MODEL,
      messages: [{ role: 'user', content: 'Weather in Paris?' }],
      tools: [WEATHER_TOOL],
    })
    check(resp.done === true, 'not done')
    checkToolCalls(resp.message.tool_calls, 'chat tools')
  },

  async chat_tools_stream() {
    const parts = await collect(
      await client.chat({
        model: MODEL,
        messages: [{ role: 'user', content: 'Weather in Paris?' }],
        tools: [WEATHER_TOOL],
        stream: true,
      }),
    )
    check(parts.length > 0 && parts[parts.length - 1].done === true, 'last chunk not done')
    checkToolCalls(parts.flatMap((p) => p.message.tool_calls ?? []), 'chat tools stream')
  },

  async embed_single() {
    const resp = await client.embed({ model: MODEL, input: 'hello world' })
    check(resp.embeddings.length === 1, `${resp.embeddings.length} embeddings for one input`)
    checkVector(resp.embeddings[0], 'embed single')
  },

  async embed_list() {
    const inputs = ['first', 'second', 'third']
    const resp = await client.embed({ model: MODEL, input: inputs })
    check(resp.embeddings.length === inputs.length, `${resp.embeddings.length} embeddings for ${inputs.length} inputs`)
    const dims = new Set(resp.embeddings.map((v) => v.length))
    check(dims.size === 1, `vectors of different lengths: ${show([...dims])}`)
    resp.embeddings.forEach((v, i) => checkVector(v, `embed list [${i}]`))
  },

  async embeddings_legacy() {
    if (typeof client.embeddings !== 'function') return
    const resp = await client.embeddings({ model: MODEL, prompt: 'hello world' })
    checkVector(resp.embedding, 'embeddings')
  },

  async chat_unknown_404() {
    await expectNotFound(() => client.chat({ model: UNKNOWN, messages: USER }), 'chat')
  },

  async chat_stream_unknown_404() {
    await expectNotFound(() => client.chat({ model: UNKNOWN, messages: USER, stream: true }), 'chat stream')
  },

  async generate_unknown_404() {
    await expectNotFound(() => client.generate({ model: UNKNOWN, prompt: 'hi' }), 'generate')
  },

  async embed_unknown_404() {
    await expectNotFound(() => client.embed({ model: UNKNOWN, input: 'hi' }), 'embed')
  },
}

function clientVersion() {
  try {
    const require = createRequire(import.meta.url)
    return JSON.parse(readFileSync(require.resolve('ollama/package.json'), 'utf8')).version
  } catch {
    return '?'
  }
}

async function main() {
  console.log(`# ollama-js ${clientVersion()} (node ${process.version}) against ${URL_}`)
  let passed = 0
  let failed = 0
  for (const [name, fn] of Object.entries(checks)) {
    try {
      await fn()
      passed += 1
      console.log(`ok ${name}`)
    } catch (e) {
      failed += 1
      const reason = e instanceof CheckFailed ? e.message : `${e?.name}: ${e?.message}`
      console.log(`FAIL ${name}: ${reason}`)
    }
  }
  console.log(`${passed} passed, ${failed} failed`)
  process.exitCode = failed ? 1 : 0
}

await main()
