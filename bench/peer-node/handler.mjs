// The peer: Perch's OAuth callback as most Finch integrations write it — Finch's official
// Node SDK and AWS SDK v3, clients made at module load, the secret cached after first use.
// Same work as Perch on the warm path (exchange, introspect, encrypt, store, redirect), less
// care: no signed-state check, no code marker against replays, no ownership check.
import Finch from '@tryfinch/finch-api';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';
import { KMSClient, EncryptCommand } from '@aws-sdk/client-kms';
import { SecretsManagerClient, GetSecretValueCommand } from '@aws-sdk/client-secrets-manager';

const ddb = DynamoDBDocumentClient.from(new DynamoDBClient({}));
const kms = new KMSClient({});
const sm = new SecretsManagerClient({});
let secret;

async function finchSecret() {
  if (!secret) {
    const out = await sm.send(new GetSecretValueCommand({ SecretId: process.env.FINCH_SECRET_ID }));
    secret = JSON.parse(out.SecretString);
  }
  return secret;
}

export const handler = async (event) => {
  const code = event.queryStringParameters?.code;
  if (!code) return { statusCode: 400, body: JSON.stringify({ error: 'missing code' }) };
  const s = await finchSecret();
  const baseURL = process.env.FINCH_API_URL;
  const finch = new Finch({ clientID: s.client_id, clientSecret: s.client_secret, baseURL });
  const token = await finch.accessTokens.create({
    code,
    client_id: s.client_id,
    client_secret: s.client_secret,
    redirect_uri: process.env.FINCH_REDIRECT_URI,
  });
  const introspection = await finch.withAccessToken(token.access_token).account.introspect();
  const encrypted = await kms.send(new EncryptCommand({
    KeyId: process.env.KMS_KEY_ID,
    Plaintext: Buffer.from(token.access_token),
    EncryptionContext: { purpose: 'finch-access-token', connection_id: token.connection_id },
  }));
  const now = new Date().toISOString();
  await ddb.send(new PutCommand({
    TableName: process.env.TABLE_NAME,
    Item: {
      pk: `PEER#${token.connection_id}`,
      connection_id: token.connection_id,
      customer_id: token.customer_id,
      provider_id: token.provider_id,
      products: token.products,
      status: introspection.connection_status?.status ?? 'connected',
      token_ciphertext: Buffer.from(encrypted.CiphertextBlob).toString('base64'),
      created_at: now,
      updated_at: now,
    },
  }));
  const location = `${process.env.APP_RETURN_URL}?connection_id=${encodeURIComponent(token.connection_id)}&outcome=connected`;
  return { statusCode: 302, headers: { location, 'cache-control': 'no-store' } };
};
