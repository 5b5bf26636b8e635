-- Argo CD health check for dataprotection.blobbackup.io/BackupVaultGrant.
-- Reads the Ready condition the operator writes: True when the grant is valid and in effect,
-- False (with the field at fault) when its spec is invalid.
-- Lua 5.1 only (Argo CD runs gopher-lua).
local function health(status, message)
  return { status = status, message = message }
end

local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil
    or (generation ~= nil and obj.status.observedGeneration < generation) then
  return health("Progressing", "Waiting for controller")
end

if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      local message = c.message
      if message == nil or message == "" then
        message = c.reason or "Ready"
      end
      if c.status == "True" then
        return health("Healthy", message)
      end
      if c.status == "False" then
        return health("Degraded", message)
      end
      return health("Progressing", message)
    end
  end
end
return health("Progressing", "Waiting for controller")
