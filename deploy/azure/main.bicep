// foundry-monitor on Azure Container Apps, with everything it reports to: a Log Analytics workspace and a
// workspace-based Application Insights resource, one Container Apps environment per region, one container app per
// region and shard (each with one replica: `--shard i/N` splits the deployments between N apps, `--location`
// labels their results), a user-assigned managed identity with the roles it needs, secrets as Key Vault
// references, and the alert rules of alerts.bicep on the workspace.
//
// Deploy: docs/container.md ("Azure Container Apps"), with main.parameters.example.json as the starting point.
// The syntax is checked by tests/test_container_files.py (tree-sitter-bicep); there is no Bicep compiler on the
// machines that test it, so compile it once (`az bicep build --file deploy/azure/main.bicep`) before relying on it.

metadata description = 'foundry-monitor on Azure Container Apps: Log Analytics, Application Insights, managed identity and roles, Key Vault secrets, probes, alert rules'

targetScope = 'resourceGroup'

// --- where --------------------------------------------------------------------------------------------------------

@description('Prefix of every resource name (apps, environments, identity, workspace, alert rules).')
@minLength(3)
@maxLength(16)
param namePrefix string = 'foundry-monitor'

@description('Region of the workspace, Application Insights, the identity and the alert rules.')
param location string = resourceGroup().location

@description('Regions the monitor runs in: one Container Apps environment and one set of shards in each. Each daemon labels its results with its region (--location), which the multi-location alert compares.')
@minLength(1)
param monitorLocations array = [
  location
]

@description('Container apps per region, each probing its stable share of the deployments (--shard i/N). 1: one app probes every deployment.')
@minValue(1)
@maxValue(20)
param shardCount int = 1

@description('Tags for every resource.')
param tags object = {}

// --- what runs ---------------------------------------------------------------------------------------------------

@description('The foundry-monitor image, built from the repository\'s Dockerfile and pushed to a registry, for example myregistry.azurecr.io/foundry-monitor:0.1.0.')
param image string

@description('An Azure Container Registry in this resource group that holds the image: the identity pulls from it (AcrPull is assigned). Empty for an image that needs no credentials.')
param containerRegistryName string = ''

@description('CPU cores of each app (0.25 to 2).')
param cpuCores string = '0.5'

@description('Memory of each app, matching cpuCores (0.5 cores: 1Gi).')
param memory string = '1Gi'

@description('true: the daemon\'s HTTP port is reachable from the internet through the environment\'s ingress (set bearerTokenSecretName then). false: only from inside the environment, for a Prometheus running there.')
param ingressExternal bool = false

// --- what it probes ----------------------------------------------------------------------------------------------

@description('Name of the Foundry (AIServices) resource; the canaries go to https://<name>.services.ai.azure.com/anthropic/.')
param foundryResourceName string

@description('Deployment names on the Foundry resource to probe (the name sent as `model`).')
@minLength(1)
param deployments array

@description('entra: the managed identity authenticates (needs Cognitive Services User on the Foundry resource). apiKey: the key from Key Vault (apiKeySecretName).')
@allowed([
  'entra'
  'apiKey'
])
param authMode string = 'entra'

@description('Assign Cognitive Services User on the Foundry resource to the identity (authMode entra). The Foundry resource must then be in this resource group; otherwise set false and assign the role yourself.')
param assignFoundryRole bool = true

@description('Discovery: assign Reader on this resource group to the identity, so a `discovery` section in checks.yaml can read the Claude deployments, model retirement dates and quota from Azure Resource Manager.')
param assignDiscoveryReader bool = false

@description('Time between canaries of one deployment (checks.yaml defaults.interval).')
param interval string = '60s'

@description('A complete checks.yaml instead of the one made from the parameters above. It may use the environment variables every app gets: APPLICATIONINSIGHTS_CONNECTION_STRING, AZURE_CLIENT_ID, FOUNDRY_MONITOR_WORKSPACE_ID, FOUNDRY_MONITOR_LOCATION, FOUNDRY_MONITOR_SHARD, FOUNDRY_MONITOR_WEEKLY_EMAIL (true in the first region), and the secrets ANTHROPIC_FOUNDRY_API_KEY, SMTP_PASSWORD, FOUNDRY_MONITOR_TOKEN when configured.')
@secure()
param checksYaml string = ''

// --- secrets (Key Vault references, read by the identity) -------------------------------------------------------

@description('A Key Vault in this resource group with the RBAC permission model that holds the secrets named below; the identity gets Key Vault Secrets User on it. Empty: no secrets.')
param keyVaultName string = ''

@description('Secret with the Foundry API key (authMode apiKey).')
param apiKeySecretName string = ''

@description('Secret with the SMTP password for the weekly email. Empty: no password.')
param smtpPasswordSecretName string = ''

@description('Secret with the bearer token that protects /status, /debug and the status page (server.bearer_token). Empty: no token.')
param bearerTokenSecretName string = ''

// --- weekly email (optional) -------------------------------------------------------------------------------------

@description('SMTP server for the weekly email. Empty: no email.')
param smtpHost string = ''

@description('SMTP port (STARTTLS).')
param smtpPort int = 587

@description('SMTP login user. Empty: no login.')
param smtpUsername string = ''

@description('From address of the weekly email.')
param emailSender string = ''

@description('Recipients of the weekly email; empty: the weekly email is off.')
param weeklyRecipients array = []

// --- telemetry and alerts ----------------------------------------------------------------------------------------

@description('Days the workspace keeps data (the reports look back up to 400 days, the dashboards 30).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 90

@description('true: Application Insights accepts only Entra ID ingestion (the identity has Monitoring Metrics Publisher), never the instrumentation key alone.')
param appInsightsDisableLocalAuth bool = true

@description('Create the alert rules of alerts.bicep on the workspace.')
param deployAlerts bool = true

@description('E-mail addresses that receive every alert (alerts.bicep emailReceivers).')
param alertEmailReceivers array = []

@description('Optional webhook for every alert (alerts.bicep webhookUri).')
@secure()
param alertWebhookUri string = ''

@description('Skip the alert queries\' validation: a new workspace has no availability results yet, so validation would fail on the first deployment.')
param alertSkipQueryValidation bool = true

// --- derived values ----------------------------------------------------------------------------------------------

// Built-in role definition ids.
var roles = {
  cognitiveServicesUser: 'a97b65f3-24c7-4388-baec-2e87135dc908'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  logAnalyticsReader: '73c42c96-874c-492b-b04d-ab87d138a893'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  reader: 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
}

var port = 9464

// One app per region and shard.
var instances = flatten(map(range(0, length(monitorLocations)), l => map(range(0, shardCount), s => {
  location: monitorLocations[l]
  locationIndex: l
  shard: s
})))
var singleApp = length(monitorLocations) == 1 && shardCount == 1

// The generated checks.yaml: the template below with its __NAME__ tokens replaced. The ${VAR} references stay as
// they are (a ''' string is never interpolated) and are expanded by the daemon from the app's environment.
var configTemplate = '''
# checks.yaml made by deploy/azure/main.bicep (its checksYaml parameter replaces this file).
data_dir: ${FOUNDRY_MONITOR_DATA_DIR:-/var/lib/foundry-monitor}
defaults:
  interval: __INTERVAL__
resources:
  - name: __RESOURCE__
    resource: __RESOURCE__
    auth:
__AUTH__
    deployments:
__DEPLOYMENTS__
telemetry:
  connection_string: ${APPLICATIONINSIGHTS_CONNECTION_STRING}
  location: ${FOUNDRY_MONITOR_LOCATION:-}
  credential: managed_identity
  client_id: ${AZURE_CLIENT_ID}
server:
  bearer_token: ${FOUNDRY_MONITOR_TOKEN:-}
reports:
  workspace_id: ${FOUNDRY_MONITOR_WORKSPACE_ID}
  credential: managed_identity
  client_id: ${AZURE_CLIENT_ID}
__WEEKLY__
__EMAIL__
'''

var entraAuthBlock = '''
      entra:
        client_id: ${AZURE_CLIENT_ID}
'''

var apiKeyAuthBlock = '''
      api_key: ${ANTHROPIC_FOUNDRY_API_KEY}
'''

// Only the apps of the first region send it (and of those only shard 0): one email, not one per region.
var weeklyBlock = '''
  weekly:
    enabled: ${FOUNDRY_MONITOR_WEEKLY_EMAIL:-false}
    recipients: __RECIPIENTS__
'''

var emailBlock = '''
email:
  sender: ${FOUNDRY_MONITOR_EMAIL_SENDER}
  smtp:
    host: ${SMTP_HOST}
    port: ${SMTP_PORT:-587}
    security: starttls
    username: ${SMTP_USERNAME:-}
    password: ${SMTP_PASSWORD:-}
'''

// (A block ends with a newline, which leaves an empty line in the YAML: harmless.)
var deploymentLines = join(map(deployments, d => '      - name: "${d}"'), '\n')
var withInterval = replace(configTemplate, '__INTERVAL__', interval)
var withResource = replace(withInterval, '__RESOURCE__', foundryResourceName)
var withAuth = replace(withResource, '__AUTH__', authMode == 'entra' ? entraAuthBlock : apiKeyAuthBlock)
var withDeployments = replace(withAuth, '__DEPLOYMENTS__', deploymentLines)
var weekly = empty(weeklyRecipients) ? '' : replace(weeklyBlock, '__RECIPIENTS__', string(weeklyRecipients))
var withWeekly = replace(withDeployments, '__WEEKLY__', weekly)
var generatedConfig = replace(withWeekly, '__EMAIL__', empty(smtpHost) ? '' : emailBlock)
var config = empty(checksYaml) ? generatedConfig : checksYaml

var keyVaultSecretUrl = 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/secrets/'

var configSecret = [
  {
    name: 'checks-yaml'
    value: config
  }
]
var apiKeySecret = authMode == 'apiKey' ? [
  {
    name: 'foundry-api-key'
    keyVaultUrl: '${keyVaultSecretUrl}${apiKeySecretName}'
    identity: identity.id
  }
] : []
var smtpPasswordSecret = empty(smtpPasswordSecretName) ? [] : [
  {
    name: 'smtp-password'
    keyVaultUrl: '${keyVaultSecretUrl}${smtpPasswordSecretName}'
    identity: identity.id
  }
]
var bearerTokenSecret = empty(bearerTokenSecretName) ? [] : [
  {
    name: 'bearer-token'
    keyVaultUrl: '${keyVaultSecretUrl}${bearerTokenSecretName}'
    identity: identity.id
  }
]
var secrets = concat(configSecret, apiKeySecret, smtpPasswordSecret, bearerTokenSecret)

var telemetryEnv = [
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    // DefaultAzureCredential and the config's client_id pick the user-assigned identity with it.
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  {
    name: 'FOUNDRY_MONITOR_WORKSPACE_ID'
    value: workspace.properties.customerId
  }
]
var apiKeyEnv = authMode == 'apiKey' ? [
  {
    name: 'ANTHROPIC_FOUNDRY_API_KEY'
    secretRef: 'foundry-api-key'
  }
] : []
var smtpEnv = empty(smtpHost) ? [] : [
  {
    name: 'FOUNDRY_MONITOR_EMAIL_SENDER'
    value: emailSender
  }
  {
    name: 'SMTP_HOST'
    value: smtpHost
  }
  {
    name: 'SMTP_PORT'
    value: string(smtpPort)
  }
  {
    name: 'SMTP_USERNAME'
    value: smtpUsername
  }
]
var smtpPasswordEnv = empty(smtpPasswordSecretName) ? [] : [
  {
    name: 'SMTP_PASSWORD'
    secretRef: 'smtp-password'
  }
]
var bearerTokenEnv = empty(bearerTokenSecretName) ? [] : [
  {
    name: 'FOUNDRY_MONITOR_TOKEN'
    secretRef: 'bearer-token'
  }
]
var sharedEnv = concat(telemetryEnv, apiKeyEnv, smtpEnv, smtpPasswordEnv, bearerTokenEnv)

// --- telemetry ---------------------------------------------------------------------------------------------------

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-logs'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${namePrefix}-appi'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: appInsightsDisableLocalAuth
  }
}

// --- identity and roles ------------------------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-id'
  location: location
  tags: tags
}

// Entra ingestion of telemetry (telemetry.credential: managed_identity).
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// `foundry-monitor report --source log-analytics` and the weekly email read the workspace.
resource logAnalyticsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, identity.id, roles.logAnalyticsReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.logAnalyticsReader)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource foundry 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: foundryResourceName
}

// Entra canaries: the identity calls the Foundry resource's data plane.
resource cognitiveServicesUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (authMode == 'entra' && assignFoundryRole) {
  name: guid(foundry.id, identity.id, roles.cognitiveServicesUser)
  scope: foundry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Discovery (checks.yaml `discovery`): the identity lists the Foundry accounts, deployments, model catalogue and
// quota of this resource group through Azure Resource Manager. For whole subscriptions, assign Reader there:
// az role assignment create --role Reader --scope /subscriptions/ID --assignee-object-id <principalId>.
resource discoveryReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignDiscoveryReader) {
  name: guid(resourceGroup().id, identity.id, roles.reader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.reader)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: empty(keyVaultName) ? 'none' : keyVaultName
}

// The Key Vault references of the app's secrets are read with the identity.
resource keyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(keyVaultName)) {
  name: guid(keyVault.id, identity.id, roles.keyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: empty(containerRegistryName) ? 'none' : containerRegistryName
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(containerRegistryName)) {
  name: guid(registry.id, identity.id, roles.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// --- Container Apps ----------------------------------------------------------------------------------------------

resource environments 'Microsoft.App/managedEnvironments@2024-03-01' = [for (region, l) in monitorLocations: {
  name: '${namePrefix}-env-${l}'
  location: region
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}]

resource apps 'Microsoft.App/containerApps@2024-03-01' = [for i in instances: {
  name: singleApp ? namePrefix : '${namePrefix}-l${i.locationIndex}-s${i.shard}'
  location: i.location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environments[i.locationIndex].id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      secrets: secrets
      registries: empty(containerRegistryName) ? [] : [
        {
          server: '${containerRegistryName}${environment().suffixes.acrLoginServer}'
          identity: identity.id
        }
      ]
      ingress: {
        external: ingressExternal
        targetPort: port
        transport: 'http'
        allowInsecure: false
      }
    }
    template: {
      containers: [
        {
          name: 'foundry-monitor'
          image: image
          args: [
            'run'
            '--config'
            '/etc/foundry-monitor/checks.yaml'
            '--host'
            '0.0.0.0'
            '--port'
            string(port)
            '--log-format'
            'json'
          ]
          env: concat(sharedEnv, [
            {
              name: 'FOUNDRY_MONITOR_SHARD'
              value: '${i.shard}/${shardCount}'
            }
            {
              name: 'FOUNDRY_MONITOR_LOCATION'
              value: i.location
            }
            {
              name: 'FOUNDRY_MONITOR_WEEKLY_EMAIL'
              value: i.locationIndex == 0 ? 'true' : 'false'
            }
          ])
          resources: {
            cpu: json(cpuCores)
            memory: memory
          }
          probes: [
            {
              // the daemon is up and scheduling; it starts in a few seconds
              type: 'Startup'
              httpGet: {
                path: '/healthz'
                port: port
              }
              periodSeconds: 5
              failureThreshold: 24
            }
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: port
              }
              periodSeconds: 30
              timeoutSeconds: 5
              failureThreshold: 3
            }
            {
              // ready once the config is loaded and the first round of canaries is done (up to one interval)
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: port
              }
              periodSeconds: 15
              timeoutSeconds: 5
              failureThreshold: 3
            }
          ]
          volumeMounts: [
            {
              volumeName: 'config'
              mountPath: '/etc/foundry-monitor'
            }
            {
              volumeName: 'data'
              mountPath: '/var/lib/foundry-monitor'
            }
          ]
        }
      ]
      // The config as a file from the app's secret; the data directory (store, telemetry offline storage) on the
      // replica's own disk: SQLite in WAL mode needs a local file system, not an SMB share. It starts empty after a
      // restart, so reports on Container Apps come from the workspace (--source log-analytics).
      volumes: [
        {
          name: 'config'
          storageType: 'Secret'
          secrets: [
            {
              secretRef: 'checks-yaml'
              path: 'checks.yaml'
            }
          ]
        }
        {
          name: 'data'
          storageType: 'EmptyDir'
        }
      ]
      // One replica per app: more would probe every deployment twice. Scale out with shardCount instead.
      scale: {
        minReplicas: 1
        maxReplicas: 1
      }
    }
  }
  dependsOn: [
    metricsPublisher
    logAnalyticsReader
    cognitiveServicesUser
    keyVaultSecretsUser
    acrPull
  ]
}]

// --- alerts ------------------------------------------------------------------------------------------------------

module alerts './alerts.bicep' = if (deployAlerts) {
  name: '${namePrefix}-alerts'
  params: {
    workspaceId: workspace.id
    location: location
    namePrefix: namePrefix
    emailReceivers: alertEmailReceivers
    webhookUri: alertWebhookUri
    skipQueryValidation: alertSkipQueryValidation
    tags: tags
  }
}

// --- outputs -----------------------------------------------------------------------------------------------------

output appNames array = [for (i, n) in instances: apps[n].name]
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output workspaceId string = workspace.id
output workspaceCustomerId string = workspace.properties.customerId
output appInsightsName string = appInsights.name
