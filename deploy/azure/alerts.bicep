// Alerting for foundry-monitor as code: one action group and the log search alert rules over the Log Analytics
// workspace that the monitor's Application Insights telemetry lands in (AppAvailabilityResults).
//
// Every rule's query is loaded from deploy/azure/kql/<rule>.kql, so the KQL checked by tests/test_alerts.py is
// exactly what Azure runs. Thresholds live in the rules (parameters below), never inside the KQL.
// How to deploy and tune: docs/alerts.md.

metadata description = 'foundry-monitor alerts: deployment down, auth failures, throttling, latency and TTFT, multi-location failures, silent monitor, canary spend, control-plane drift, model retirement; real traffic per deployment from platform metrics (429, 5xx, availability)'

targetScope = 'resourceGroup'

// --- where ---------------------------------------------------------------------------------------------------

@description('Resource id of the Log Analytics workspace behind the monitor\'s Application Insights resource (the rules query its App* tables).')
param workspaceId string

@description('Region of the alert rules; use the workspace\'s region.')
param location string = resourceGroup().location

@description('Prefix of every resource name (action group and rules).')
@minLength(1)
@maxLength(60)
param namePrefix string = 'foundry-monitor'

@description('Short name of the action group, shown in e-mails and SMS (at most 12 characters).')
@minLength(1)
@maxLength(12)
param actionGroupShortName string = 'foundrymon'

@description('Tags for every resource.')
param tags object = {}

// --- who hears about it ----------------------------------------------------------------------------------------

@description('E-mail addresses that receive every alert (the common alert schema). May be empty when a webhook is given.')
param emailReceivers array

@description('Optional webhook (for example a chat or paging integration) that receives every alert in the common alert schema. Empty: no webhook receiver.')
@secure()
param webhookUri string = ''

@description('false creates the rules disabled (nothing is evaluated or sent).')
param enabled bool = true

@description('true skips the query validation at creation, for a workspace that has not received an availability result yet.')
param skipQueryValidation bool = false

// --- thresholds and windows --------------------------------------------------------------------------------------

@description('Deployment down: the window in which no canary of the deployment may succeed.')
@allowed([
  'PT10M'
  'PT15M'
  'PT30M'
  'PT1H'
])
param downWindow string = 'PT15M'

@description('Deployment down: failed scheduled canaries in the window (with none succeeding) before it alerts. Match it to failure_threshold in checks.yaml; the window must hold that many canaries at the deployment\'s interval.')
@minValue(1)
param downMinFailures int = 3

@description('Authentication or permission failures: the window each evaluation (every 5 minutes) looks at.')
@allowed([
  'PT5M'
  'PT10M'
  'PT15M'
])
param authWindow string = 'PT10M'

@description('Throttled: percentage of scheduled canaries answered with HTTP 429 above which it alerts.')
@minValue(1)
@maxValue(100)
param throttledSharePercent int = 20

@description('Throttled: the window the percentage is computed over.')
@allowed([
  'PT10M'
  'PT15M'
  'PT30M'
  'PT1H'
])
param throttledWindow string = 'PT15M'

@description('Quota trend: rise, in percentage points, of the share of 429 canaries in the last 24 hours against the 24 hours before, above which it warns.')
@minValue(1)
@maxValue(100)
param quotaTrendRisePoints int = 5

@description('Latency SLO: p95 of the canary latency (request to last byte), in milliseconds, above which it alerts.')
@minValue(1)
param latencyP95ThresholdMs int = 10000

@description('TTFT SLO: p95 of the time to first token, in milliseconds, above which it alerts.')
@minValue(1)
param ttftP95ThresholdMs int = 5000

@description('Latency and TTFT SLO: the window the p95 is computed over.')
@allowed([
  'PT15M'
  'PT30M'
  'PT1H'
  'PT2H'
])
param latencyWindow string = 'PT30M'

@description('Multi-location: the number of locations (N) that must each see the deployment fail, with no success there, before it alerts.')
@minValue(1)
param multiLocationMinFailing int = 2

@description('Multi-location: the window in which each location is judged.')
@allowed([
  'PT10M'
  'PT15M'
  'PT30M'
  'PT1H'
])
param multiLocationWindow string = 'PT15M'

@description('Monitor silent: minutes without any availability result from a daemon before it alerts. Keep it above the longest canary interval plus timeout.')
@minValue(5)
@maxValue(1380)
param silentMinutes int = 10

@description('Canary spend: budget in US dollars for the estimated cost of all canaries over the last 24 hours (a decimal number as a string, for example \'2.50\').')
param dailySpendBudgetUsd string = '5'

// --- real traffic: Azure's own platform metrics per deployment (metric alerts) -----------------------------------

@description('Resource ids of the Foundry resources (Microsoft.CognitiveServices/accounts) whose real traffic gets metric alerts per deployment (the same ids as resources[].azure_resource_id in checks.yaml). Empty: no metric alerts.')
param foundryResourceIds array = []

@description('Real traffic: the window each metric alert judges (evaluated every 5 minutes).')
@allowed([
  'PT15M'
  'PT30M'
  'PT1H'
])
param realTrafficWindow string = 'PT15M'

@description('Real traffic throttled: HTTP 429 answers to real callers of one deployment in the window above which it alerts (metric alerts cannot divide, so this is a count; the report shows the share).')
@minValue(1)
param realThrottledRequests int = 50

@description('Real traffic failing: HTTP 5xx answers to callers of one deployment in the window above which it alerts.')
@minValue(1)
param realServerErrorRequests int = 10

@description('Real traffic availability: Azure\'s ModelAvailabilityRate (share of requests without a 5xx) of one deployment, in percent, below which it alerts.')
@minValue(1)
@maxValue(100)
param realAvailabilityPercent int = 99

// --- the rules ---------------------------------------------------------------------------------------------------

var perDeployment = [
  {
    name: 'resource'
    operator: 'Include'
    values: [
      '*'
    ]
  }
  {
    name: 'deployment'
    operator: 'Include'
    values: [
      '*'
    ]
  }
]

var perResourceKindLocation = [
  {
    name: 'resource'
    operator: 'Include'
    values: [
      '*'
    ]
  }
  {
    name: 'failure_kind'
    operator: 'Include'
    values: [
      '*'
    ]
  }
  {
    name: 'location'
    operator: 'Include'
    values: [
      '*'
    ]
  }
]

var perDaemon = [
  {
    name: 'daemon'
    operator: 'Include'
    values: [
      '*'
    ]
  }
  {
    name: 'location'
    operator: 'Include'
    values: [
      '*'
    ]
  }
]

// One entry per rule; the resource loop below turns each into a scheduledQueryRules resource. Every query
// returns at most one row per dimension combination with the measure already computed, so the rules use
// Maximum over that single value and one evaluation period.
var rules = [
  {
    name: 'deployment-down'
    displayName: 'Claude deployment down'
    severity: 1
    evaluationFrequency: 'PT5M'
    windowSize: downWindow
    overrideQueryTimeRange: null
    query: loadTextContent('kql/deployment-down.kql')
    metricMeasureColumn: 'confirmed_failures'
    operator: 'GreaterThanOrEqual'
    threshold: downMinFailures
    dimensions: perDeployment
    description: 'The deployment is down: in the rule window (${downWindow}) at least ${downMinFailures} scheduled canaries failed and not one canary or re-check succeeded, from any location (a failure that its re-check cleared leaves a success, so every counted failure was confirmed; 429s are left to the throttled rule). What to do: run foundry-monitor check --deployment NAME to see the failure class and its hint (README, Failure classes); the search results list the failure kinds. Resolves itself when a canary succeeds again.'
  }
  {
    name: 'auth-failures'
    displayName: 'Claude deployment authentication or permission failure'
    severity: 1
    evaluationFrequency: 'PT5M'
    windowSize: authWindow
    overrideQueryTimeRange: null
    query: loadTextContent('kql/auth-failures.kql')
    metricMeasureColumn: 'failures'
    operator: 'GreaterThan'
    threshold: 0
    dimensions: perResourceKindLocation
    description: 'A canary was refused or could not authenticate (failure_kind invalid_api_key, token_rejected, credential_unavailable or permission_denied). What to do: invalid_api_key - the API key was rotated or is wrong, compare it with Keys and Endpoint of the Foundry resource and update the secret; token_rejected - the Entra ID token was refused, check the identity, the scope https://cognitiveservices.azure.com/.default and that Entra ID auth is enabled; credential_unavailable - no token could be obtained, check the managed identity or AZURE_CLIENT_ID / AZURE_TENANT_ID on the daemon at that location; permission_denied - assign Cognitive Services User or Azure AI User on the resource (new roles take minutes to apply).'
  }
  {
    name: 'throttled'
    displayName: 'Claude deployment throttled (HTTP 429)'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: throttledWindow
    overrideQueryTimeRange: null
    query: loadTextContent('kql/throttled.kql')
    metricMeasureColumn: 'rate_limited_pct'
    operator: 'GreaterThan'
    threshold: throttledSharePercent
    dimensions: perDeployment
    description: 'More than ${throttledSharePercent} % of the deployment\'s scheduled canaries in the rule window (${throttledWindow}) were answered with HTTP 429 (rate_limited): its requests-per-minute or tokens-per-minute quota is used up, so real traffic is being throttled too. What to do: check the deployment\'s quota and usage in the Azure portal (Foundry sends no rate-limit headers) and request a quota increase, or move traffic to another deployment. A 429 naming enforced_spend_limit_reached means a spend limit, which retrying will not fix.'
  }
  {
    name: 'quota-trend'
    displayName: 'Claude deployment quota trend: 429s rising'
    severity: 3
    evaluationFrequency: 'PT1H'
    windowSize: 'P1D'
    overrideQueryTimeRange: 'P2D'
    query: loadTextContent('kql/quota-trend.kql')
    metricMeasureColumn: 'rate_limited_rise_pct'
    operator: 'GreaterThan'
    threshold: quotaTrendRisePoints
    dimensions: perDeployment
    description: 'Early warning: the share of the deployment\'s canaries answered with HTTP 429 rose by more than ${quotaTrendRisePoints} percentage points in the last 24 hours against the 24 hours before, so its traffic is growing into its quota. What to do: compare the deployment\'s usage with its quota in the Azure portal and plan a quota increase before it is throttled for good.'
  }
  {
    name: 'latency-p95'
    displayName: 'Claude deployment latency SLO breach (p95)'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: latencyWindow
    overrideQueryTimeRange: null
    query: loadTextContent('kql/latency-p95.kql')
    metricMeasureColumn: 'p95_latency_ms'
    operator: 'GreaterThan'
    threshold: latencyP95ThresholdMs
    dimensions: perDeployment
    description: 'The 95th percentile of the successful canaries\' latency (request sent to last byte) over the rule window (${latencyWindow}) is above ${latencyP95ThresholdMs} ms (deployments with fewer than 5 canaries in the window are not judged). What to do: compare locations and the Azure status page for the region; a slow model usually recovers on its own, and if it persists open a support case quoting request-id and apim-request-id from the log.'
  }
  {
    name: 'ttft-p95'
    displayName: 'Claude deployment time-to-first-token SLO breach (p95)'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: latencyWindow
    overrideQueryTimeRange: null
    query: loadTextContent('kql/ttft-p95.kql')
    metricMeasureColumn: 'p95_ttft_ms'
    operator: 'GreaterThan'
    threshold: ttftP95ThresholdMs
    dimensions: perDeployment
    description: 'The 95th percentile of the time to the first streamed token of the successful canaries over the rule window (${latencyWindow}) is above ${ttftP95ThresholdMs} ms (deployments with fewer than 5 streamed canaries in the window are not judged). What to do: the model is slow to start answering, usually under load; check the region\'s status and the deployment\'s utilisation, and if it persists open a support case quoting request-id and apim-request-id from the log.'
  }
  {
    name: 'multi-location'
    displayName: 'Claude deployment failing from several locations'
    severity: 1
    evaluationFrequency: 'PT5M'
    windowSize: multiLocationWindow
    overrideQueryTimeRange: null
    query: loadTextContent('kql/multi-location.kql')
    metricMeasureColumn: 'failing_locations'
    operator: 'GreaterThanOrEqual'
    threshold: multiLocationMinFailing
    dimensions: perDeployment
    description: 'The deployment failed from at least ${multiLocationMinFailing} locations in the rule window (${multiLocationWindow}), with no successful canary or re-check from those locations (the search results name them and how many locations probe it). Failures seen from several places point at the deployment or its region, not at one daemon\'s network. What to do: run foundry-monitor check --deployment NAME and follow the failure class hint; check the Azure status page for the region.'
  }
  {
    name: 'monitor-silent'
    displayName: 'foundry-monitor daemon silent (dead-man\'s switch)'
    severity: 1
    evaluationFrequency: 'PT5M'
    windowSize: 'PT10M'
    overrideQueryTimeRange: 'P1D'
    query: loadTextContent('kql/monitor-silent.kql')
    metricMeasureColumn: 'minutes_silent'
    operator: 'GreaterThanOrEqual'
    threshold: silentMinutes
    dimensions: perDaemon
    description: 'A monitor daemon has sent no availability result for ${silentMinutes} minutes or more, so its deployments are not being watched. A log alert cannot fire on missing rows, so the query looks back one day (query time range overridden to P1D) to list every daemon (AppRoleInstance, the service.instance.id, at its Location) and measures the minutes since its last result. What to do: check that the daemon runs (foundry-monitor health, its container or service logs), its telemetry connection string and ingestion identity, and the telemetry offline storage under its data directory. A daemon retired on purpose keeps this alert open until its last result is a day old.'
  }
  {
    name: 'deployment-drift'
    displayName: 'Claude deployment changed in Azure (drift)'
    severity: 3
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    overrideQueryTimeRange: null
    query: loadTextContent('kql/deployment-drift.kql')
    metricMeasureColumn: 'changes'
    operator: 'GreaterThan'
    threshold: 0
    dimensions: perDeployment
    description: 'A Claude deployment found by discovery changed in Azure Resource Manager: its model version, SKU, capacity, rate limits or state (the search results list each field with its value before and after). What to do: confirm the change was intended (an automatic model upgrade, a capacity edit, a paused deployment); a lower capacity or rate limit explains new 429s, a new model version new latency or answers. foundry-monitor inventory shows the deployment as it is now.'
  }
  {
    name: 'model-retirement'
    displayName: 'Claude model retiring soon (90, 30 or 7 days)'
    severity: 2
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    overrideQueryTimeRange: null
    query: loadTextContent('kql/model-retirement.kql')
    metricMeasureColumn: 'warnings'
    operator: 'GreaterThan'
    threshold: 0
    dimensions: perDeployment
    description: 'The model version behind a discovered Claude deployment retires within threshold_days (90, 30 or 7) according to the model catalogue of its region (retires_on). What to do: plan the move to a newer model version (deploy it, test it, switch clients) before the date; after retirement the deployment stops answering. foundry-monitor inventory lists days to retirement for every deployment.'
  }
  {
    name: 'canary-spend'
    displayName: 'foundry-monitor canary spend above budget'
    severity: 2
    evaluationFrequency: 'PT1H'
    windowSize: 'P1D'
    overrideQueryTimeRange: null
    query: loadTextContent('kql/canary-spend.kql')
    metricMeasureColumn: 'cost_usd'
    operator: 'GreaterThan'
    threshold: json(dailySpendBudgetUsd)
    dimensions: []
    description: 'The estimated cost of all canaries over the last 24 hours (foundry_monitor.cost_usd, from the pricing table) is above the budget of ${dailySpendBudgetUsd} USD. What to do: look for deployments probed too often or with a larger max_tokens or prompt than needed (foundry-monitor report shows tokens and cost per deployment), raise interval, or set budget.monthly_usd in checks.yaml so the daemon never probes faster than the budget allows.'
  }
]

// Metric alert rules on each Foundry resource's platform metrics, split by deployment: real callers, not the
// canaries (they complement the log alerts above, which judge the canaries). One rule per resource and entry.
var realTrafficRules = [
  {
    name: 'real-throttled'
    displayName: 'Claude deployment: real callers throttled (429)'
    severity: 2
    metricName: 'ModelRequests'
    statusCodes: [
      '429'
    ]
    operator: 'GreaterThan'
    threshold: realThrottledRequests
    timeAggregation: 'Total'
    description: 'More than ${realThrottledRequests} requests to this deployment were answered 429 (rate limit) in ${realTrafficWindow}, per Azure\'s own ModelRequests metric: real callers are being throttled. What to do: compare with the canary\'s view (foundry-monitor report, Azure\'s view section): if the canaries are fine, the deployment\'s tokens-per-minute or requests-per-minute quota is too small for real traffic; raise the deployment\'s capacity or quota, spread load over another deployment or region, and make callers honour retry-after.'
  }
  {
    name: 'real-server-errors'
    displayName: 'Claude deployment: real callers get server errors (5xx)'
    severity: 1
    metricName: 'ModelRequests'
    statusCodes: [
      '500'
      '502'
      '503'
      '504'
      '529'
    ]
    operator: 'GreaterThan'
    threshold: realServerErrorRequests
    timeAggregation: 'Total'
    description: 'More than ${realServerErrorRequests} requests to this deployment were answered with a server error (500, 502, 503, 504 or 529) in ${realTrafficWindow}, per Azure\'s ModelRequests metric. What to do: check Azure Service Health and the canary alerts; if the canaries succeed while real callers fail, the failures depend on load or request size (long prompts or outputs); open a support case with the time window and the deployment name, and fail over to another deployment or region meanwhile.'
  }
  {
    name: 'real-availability'
    displayName: 'Claude deployment: availability to real callers below target'
    severity: 1
    metricName: 'ModelAvailabilityRate'
    statusCodes: []
    operator: 'LessThan'
    threshold: realAvailabilityPercent
    timeAggregation: 'Average'
    description: 'Azure\'s ModelAvailabilityRate for this deployment (requests without a 5xx) averaged below ${realAvailabilityPercent}% over ${realTrafficWindow}. What to do: look at the 5xx alert and the canary\'s availability in foundry-monitor report; a drop seen by both is the deployment or the region (check Service Health, open a support case); one seen only here depends on real traffic\'s load or request size.'
  }
]

var realTrafficCount = length(foundryResourceIds) * length(realTrafficRules)

// --- resources ---------------------------------------------------------------------------------------------------

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-alerts'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: actionGroupShortName
    enabled: true
    emailReceivers: [for (address, i) in emailReceivers: {
      name: 'email-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
    webhookReceivers: empty(webhookUri) ? [] : [
      {
        name: 'webhook'
        serviceUri: webhookUri
        useCommonAlertSchema: true
      }
    ]
  }
}

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: '${namePrefix}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: enabled
    scopes: [
      workspaceId
    ]
    evaluationFrequency: rule.evaluationFrequency
    windowSize: rule.windowSize
    overrideQueryTimeRange: rule.overrideQueryTimeRange
    skipQueryValidation: skipQueryValidation
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Maximum'
          metricMeasureColumn: rule.metricMeasureColumn
          dimensions: rule.dimensions
          operator: rule.operator
          threshold: rule.threshold
          // the queries judge their own window, so one evaluation period that fails is enough
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
      customProperties: {
        runbook: 'docs/alerts.md'
        rule: rule.name
      }
    }
  }
}]

resource realTrafficAlerts 'Microsoft.Insights/metricAlerts@2018-03-01' = [for i in range(0, realTrafficCount): {
  name: '${namePrefix}-${last(split(foundryResourceIds[i / length(realTrafficRules)], '/'))}-${realTrafficRules[i % length(realTrafficRules)].name}'
  location: 'global'
  tags: tags
  properties: {
    description: realTrafficRules[i % length(realTrafficRules)].description
    severity: realTrafficRules[i % length(realTrafficRules)].severity
    enabled: enabled
    scopes: [
      foundryResourceIds[i / length(realTrafficRules)]
    ]
    evaluationFrequency: 'PT5M'
    windowSize: realTrafficWindow
    targetResourceType: 'Microsoft.CognitiveServices/accounts'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: realTrafficRules[i % length(realTrafficRules)].name
          metricNamespace: 'Microsoft.CognitiveServices/accounts'
          metricName: realTrafficRules[i % length(realTrafficRules)].metricName
          operator: realTrafficRules[i % length(realTrafficRules)].operator
          threshold: realTrafficRules[i % length(realTrafficRules)].threshold
          timeAggregation: realTrafficRules[i % length(realTrafficRules)].timeAggregation
          // one alert per deployment; the request rules also keep only the status codes they count
          dimensions: concat([
            {
              name: 'ModelDeploymentName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ], empty(realTrafficRules[i % length(realTrafficRules)].statusCodes) ? [] : [
            {
              name: 'StatusCode'
              operator: 'Include'
              values: realTrafficRules[i % length(realTrafficRules)].statusCodes
            }
          ])
          skipMetricValidation: true
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
        webHookProperties: {
          runbook: 'README.md#azures-view'
          rule: realTrafficRules[i % length(realTrafficRules)].name
        }
      }
    ]
  }
}]

output actionGroupId string = actionGroup.id
output ruleNames array = [for (rule, i) in rules: alertRules[i].name]
output realTrafficAlertNames array = [for i in range(0, realTrafficCount): realTrafficAlerts[i].name]
