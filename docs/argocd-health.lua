-- Argo CD health check for modelrollout.io/ModelRollout (see docs/gitops.md).
-- Install as resource.customizations.health.modelrollout.io_ModelRollout in the argocd-cm ConfigMap.
-- Tested with a real Lua 5.1 interpreter by tests/unit/test_argocd_health.py against every status.phase.
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

-- status.message, else the message of the first of these conditions that has one
local function message_of(status, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  for _, ctype in ipairs({"Stalled", "Ready", "Healthy", "Progressing"}) do
    local c = condition(status, ctype)
    if c ~= nil and c.message ~= nil and c.message ~= "" then
      return c.message
    end
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

-- a write the apiserver refuses (403, 422, ...) stalls the rollout whatever its phase (Stalled=True)
local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  if stalled.message ~= nil and stalled.message ~= "" then
    hs.message = stalled.message
  else
    hs.message = message_of(status, "Stalled")
  end
  return hs
end

local phase = status.phase
local by_phase = {
  Succeeded = "Healthy",
  Pending = "Progressing",
  Prewarming = "Progressing",
  Progressing = "Progressing",
  Promoting = "Progressing",
  RollingBack = "Progressing",
  Paused = "Suspended",
  AwaitingApproval = "Suspended",
  Failed = "Degraded",
  Invalid = "Degraded",
  RolledBack = "Degraded",
}

if phase == nil or phase == "" then
  hs.status = "Progressing"
  hs.message = message_of(status, "Waiting for the operator to set a phase")
  return hs
end

local health = by_phase[phase]
if health == nil then
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase) .. ": " .. message_of(status, "")
  return hs
end

hs.status = health
hs.message = message_of(status, phase)
return hs
