-- Argo CD health check for dataprotection.blobbackup.io/BlobRestore.
-- Healthy once the restore Succeeded; Degraded when it Failed or a person must act (Stalled);
-- Progressing otherwise. Lua 5.1 only (Argo CD runs gopher-lua).
local function health(status, message)
  return { status = status, message = message }
end

local function condition(kind)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil or obj.status.phase == nil then
  return health("Progressing", "Waiting for controller")
end

local phase = obj.status.phase
if phase == "Succeeded" then
  return health("Healthy", describe(condition("Ready"), "Restored"))
end
local stalled = condition("Stalled")
if phase == "Failed" then
  return health("Degraded", describe(stalled, "Restore failed"))
end
if stalled ~= nil and stalled.status == "True" then
  return health("Degraded", describe(stalled, "Stalled"))
end
return health("Progressing", describe(condition("Ready"), phase))
