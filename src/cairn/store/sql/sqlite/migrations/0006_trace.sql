-- The trace context (W3C traceparent/tracestate, as JSON) of the code that started a run, so that
-- the spans of its activations and actions join the caller's trace on any worker (cairn[otel]).
ALTER TABLE cairn_runs ADD COLUMN trace_context TEXT;
