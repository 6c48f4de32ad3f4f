import { notFound } from 'next/navigation'

export const dynamicParams = true

export function generateStaticParams() {
  return [{ slug: 'hello' }, { slug: 'world' }]
}

export default async function BlogPost({ params }) {
  const { slug } = await params
  if (slug === 'missing') notFound()
  return (
    <article>
      <h1>Post: {slug}</h1>
    </article>
  )
}
