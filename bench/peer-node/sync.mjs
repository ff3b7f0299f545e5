// The peer of the sync benchmark (G15): one connection's full sync of organization data the way
// most Finch integrations would write it — Finch's official Node SDK (the directory's
// auto-paging, `retrieveMany`) and AWS SDK v3's document client writing every record. It
// batches as far as the SDK lets a careful caller: ids in chunks of 10,000 (a cap the SDK only
// documents), the directory at the SDK's own page size. Less work than Perch: no encryption,
// no change detection, no change feed, no checkpoint.
import Finch from '@tryfinch/finch-api';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, BatchWriteCommand } from '@aws-sdk/lib-dynamodb';

const ddb = DynamoDBDocumentClient.from(new DynamoDBClient({}), {
  marshallOptions: { removeUndefinedValues: true },
});
const BATCH_IDS = 10000;

// Puts items 25 at a time (BatchWriteItem's limit), retrying what DynamoDB left unprocessed.
class Writer {
  constructor(table) {
    this.table = table;
    this.items = [];
    this.written = 0;
  }

  async put(item) {
    this.items.push(item);
    if (this.items.length === 25) await this.flush();
  }

  async flush() {
    let request = { [this.table]: this.items.map((Item) => ({ PutRequest: { Item } })) };
    this.written += this.items.length;
    this.items = [];
    while (request && Object.keys(request).length && request[this.table]?.length) {
      const out = await ddb.send(new BatchWriteCommand({ RequestItems: request }));
      request = out.UnprocessedItems;
    }
  }
}

export const handler = async (event) => {
  const finch = new Finch({ accessToken: event.access_token, baseURL: process.env.FINCH_API_URL });
  const entity_ids = [event.entity_id];
  const pk = `PEER#${event.connection_id}`;
  const out = new Writer(event.table);

  const company = await finch.hris.company.retrieve({ entity_ids });
  await out.put({ pk, sk: `company#${company.id}`, data: company });

  const ids = [];
  for await (const person of finch.hris.directory.list({ entity_ids })) {
    ids.push(person.id);
    await out.put({ pk, sk: `directory#${person.id}`, data: person });
  }
  for (let i = 0; i < ids.length; i += BATCH_IDS) {
    const requests = ids.slice(i, i + BATCH_IDS).map((individual_id) => ({ individual_id }));
    for await (const r of finch.hris.individuals.retrieveMany({ requests, entity_ids })) {
      if (r.code === 200) await out.put({ pk, sk: `individual#${r.individual_id}`, data: r.body });
    }
    for await (const r of finch.hris.employments.retrieveMany({ requests, entity_ids })) {
      if (r.code === 200) await out.put({ pk, sk: `employment#${r.individual_id}`, data: r.body });
    }
  }
  await out.flush();
  return { records: out.written };
};
