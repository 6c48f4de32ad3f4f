import Image from 'next/image'

export default function ImagePage() {
  return (
    <div>
      <h1>Image</h1>
      <Image src="/ferry.png" alt="A ferry" width={320} height={200} priority />
    </div>
  )
}
