-- Argo CD health check for dataprotection.blobbackup.io/BlobBackupInstance.
-- Reads the kstatus conditions the operator writes: Ready, Reconciling, Stalled.
-- Lua 5.1 only (Argo CD runs gopher-lua).
local function health(status, message)
  return { status = status, message = message }
end

local function progressing(message)
  return health("Progressing", message)
end

local generation = obj.metadata.generation
local deleting = obj.metadata.deletionTimestamp ~= nil

-- Conditions written for an older generation say nothing about the current spec.
local function current(condition)
  return condition.observedGeneration == nil or generation == nil
    or condition.observedGeneration >= generation
end

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind and current(c) then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil or obj.status.observedGeneration == nil
    or (generation ~= nil and obj.status.observedGeneration < generation) then
  if deleting then
    return progressing("Deleting")
  end
  return progressing("Waiting for controller")
end

-- A person must act, also when that blocks a deletion.
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  return health("Degraded", describe(stalled, "Stalled"))
end

if deleting then
  return progressing("Deleting")
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  return progressing(describe(reconciling, "Reconciling"))
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  return health("Healthy", describe(ready, "Ready"))
end
if ready ~= nil then
  return progressing(describe(ready, "Not ready"))
end
return progressing("Waiting for controller")
